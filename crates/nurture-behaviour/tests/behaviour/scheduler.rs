//! Issue #2 item 4: one code path for both clocks, and history independent of how time moves.

use super::*;

/// A tenant with a mix of everything, so that histories have something to differ in.
async fn busy_tenant(h: &Harness) -> Vec<LeadId> {
    h.template("a", "Hello {{ first_name }}", "Hi", false).await;
    h.sequence(
        "Mixed",
        vec![
            email(1, 0, "a"),
            step(2, 30, Channel::Wait),
            email(3, 10, "a"),
            reviewed_email(4, 50, "a"),
            email(5, 100, "a"),
        ],
        Some(json!({"segments_any": ["x"]})),
        Some(json!({"inactivity_days": 9})),
    )
    .await;
    h.sequence(
        "Later",
        vec![email(1, 7, "a")],
        Some(json!({"when": {"field": "attributes.t", "op": "older_than_days", "value": 3}})),
        None,
    )
    .await;
    let mut leads = Vec::new();
    for i in 0..12 {
        let w = h
            .lead_with(|l| {
                l.segments = if i % 3 == 0 { vec![] } else { vec!["x".into()] };
                l.attributes = json!({"t": format!("2026-01-0{}T0{}:30:00Z", 1 + i % 5, i % 10)})
                    .as_object()
                    .unwrap()
                    .clone();
            })
            .await;
        leads.push(w.lead.id);
    }
    leads
}

/// The history, with ids replaced by the lead's position so two runs compare.
async fn history(h: &Harness, leads: &[LeadId]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, lead) in leads.iter().enumerate() {
        for a in h.activities(*lead).await {
            out.push(format!(
                "{i} {} {:?} {} {}",
                a.activity_type,
                a.step_order.map(|s| s.get()),
                a.at,
                a.details.get("reason").unwrap_or(&json!(null))
            ));
        }
        for m in h.messages(*lead).await {
            out.push(format!(
                "{i} message {:?} {}",
                m.step_order.map(|s| s.get()),
                m.created_at
            ));
        }
    }
    out
}

behaviour_test!(
    advancing_30_days_at_once_equals_30_single_days,
    |h| async move {
        let at_once = Harness::same_backend(&h).await;
        let leads_a = busy_tenant(&at_once).await;
        at_once.advance_days(30).await;

        let leads_b = busy_tenant(&h).await;
        for _ in 0..30 {
            h.advance_days(1).await;
        }
        let (a, b) = (
            history(&at_once, &leads_a).await,
            history(&h, &leads_b).await,
        );
        assert!(a.len() > 50, "the scenario does things: {}", a.len());
        assert_eq!(a, b);
    }
);

behaviour_test!(every_item_runs_at_its_own_due_instant, |h| async move {
    h.template("a", "Hello", "Hi", false).await;
    h.sequence("Due", vec![email(1, 3, "a")], Some(json!({})), None)
        .await;
    let lead = h.lead().await.lead;
    h.advance_hours(2).await;
    let second = h.lead().await.lead;
    h.advance_days(1).await;
    assert_eq!(h.message_hours(lead.id).await, vec![3]);
    assert_eq!(h.message_hours(second.id).await, vec![5]);
    let executed = h
        .activities(lead.id)
        .await
        .into_iter()
        .find(|a| a.activity_type == ActivityType::NurtureStepExecuted)
        .unwrap();
    assert_eq!(executed.at, h.at(3));
});

behaviour_test!(work_already_due_runs_at_the_advance_start, |h| async move {
    h.template("a", "Hello", "Hi", false).await;
    h.sequence("Now", vec![email(1, 0, "a")], Some(json!({})), None)
        .await;
    h.advance_hours(5).await;
    let lead = h.lead().await.lead; // due at hour 5, which is "now"
    h.advance_hours(3).await;
    assert_eq!(h.message_hours(lead.id).await, vec![5]);
});

behaviour_test!(a_batch_size_of_one_gives_the_same_history, |h| async move {
    let store = h.store.clone();
    let clock = std::sync::Arc::new(nurture_core::clock::ManualClock::new(
        START.parse().unwrap(),
    ));
    let small = Engine::with_manual_clock(store, clock).with_config(SchedulerConfig {
        batch_size: 1,
        ..Default::default()
    });
    let leads = busy_tenant(&h).await;
    let other = Harness::same_backend(&h).await;
    let leads_other = busy_tenant(&other).await;
    small.advance_to(h.at(24 * 20)).await.unwrap();
    other.advance_days(20).await;
    // The small-batch engine ran h's tenant; compare with the default engine on `other`.
    h.clock.set(h.at(24 * 20));
    assert_eq!(
        history(&h, &leads).await,
        history(&other, &leads_other).await
    );
});

behaviour_test!(the_clock_cannot_go_back, |h| async move {
    h.advance_hours(2).await;
    let err = h.engine.advance_to(h.at(1)).await.unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
});

behaviour_test!(
    the_activity_log_records_every_decision_with_its_reason,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        let s = h
            .sequence(
                "Log",
                vec![
                    email(1, 0, "a"),
                    reviewed_email(2, 1, "a"),
                    email(3, 1, "a"),
                ],
                Some(json!({})),
                None,
            )
            .await;
        let lead = h.lead().await.lead;
        h.advance_hours(50).await; // step 2 waits for the cap until hour 48, then for a reviewer
        let a = h.pending_approvals().await.remove(0);
        h.engine
            .approve(h.p, a.id, ApprovalEdit::default())
            .await
            .unwrap();
        h.advance_hours(1).await;
        h.event(
            lead.id,
            LeadEvent::Reply {
                sentiment: Sentiment::Positive,
                until: None,
            },
        )
        .await;
        let acts = h.activities(lead.id).await;
        let types: Vec<&str> = acts.iter().map(|a| a.activity_type.as_str()).collect();
        for seed_type in [
            "nurture_enrolled",
            "nurture_step_scheduled",
            "nurture_step_executed",
            "nurture_paused",
            "nurture_resumed",
            "nurture_exited",
        ] {
            assert!(
                types.contains(&seed_type),
                "{seed_type} missing from {types:?}"
            );
        }
        let e = h.only_enrollment(lead.id).await;
        for act in acts
            .iter()
            .filter(|a| a.activity_type != ActivityType::LeadEvent)
        {
            assert_eq!((act.tenant_id, act.lead_id), (h.p.tenant_id, lead.id));
            assert_eq!(
                (act.enrollment_id, act.sequence_id),
                (Some(e.id), Some(s.id)),
                "{act:?}"
            );
            assert!(act.details.is_object());
        }
        let reason = |t: ActivityType| {
            acts.iter()
                .find(|a| a.activity_type == t)
                .map(|a| a.details["reason"].clone())
        };
        assert_eq!(
            reason(ActivityType::NurturePaused),
            Some(json!("awaiting_approval"))
        );
        assert_eq!(
            reason(ActivityType::NurtureExited),
            Some(json!("positive_reply"))
        );
        // The cap deferred step 3 (one message per 48 h): the deferral says so.
        assert!(
            acts.iter()
                .any(|a| a.activity_type == ActivityType::NurtureStepScheduled
                    && a.details["reason"] == "frequency_cap")
        );
        // Time order.
        assert!(acts.windows(2).all(|w| w[0].at <= w[1].at));
    }
);

behaviour_test!(sequence_stats_count_the_funnel, |h| async move {
    h.template("a", "Hello", "Hi", false).await;
    let s = h
        .sequence(
            "Funnel",
            vec![email(1, 0, "a"), email(2, 48, "a")],
            Some(json!({})),
            None,
        )
        .await;
    let stays = h.lead().await.lead;
    let replies = h.lead().await.lead;
    let converts = h.lead().await.lead;
    h.advance_hours(1).await;
    h.event(
        replies.id,
        LeadEvent::Reply {
            sentiment: Sentiment::Positive,
            until: None,
        },
    )
    .await;
    h.event(converts.id, LeadEvent::Converted).await;
    h.advance_days(3).await;
    let stats = h.engine.sequence_stats(h.p, s.id).await.unwrap();
    assert_eq!(stats.enrolled, 3);
    assert_eq!(stats.completed, 1);
    assert_eq!(stats.replied, 1);
    assert_eq!(stats.converted, 1);
    assert_eq!(stats.reached_step, vec![(1, 3), (2, 1)]);
    let mut by_reason = stats.exited_by_reason.clone();
    by_reason.sort();
    assert_eq!(
        by_reason,
        vec![
            ("converted".to_string(), 1),
            ("positive_reply".to_string(), 1)
        ]
    );
    let _ = stays;
});
