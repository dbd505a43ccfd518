//! Seed "HITL and safety" (opt-out, do-not-contact, frequency caps), the immediate exits of
//! "Step execution rules", and SPEC section 4 exits.

use super::*;

async fn two_step(h: &Harness, exit_rules: Option<serde_json::Value>) {
    h.template("a", "Hello", "Hi", false).await;
    h.sequence(
        "Two",
        vec![email(1, 0, "a"), email(2, 72, "a")],
        Some(json!({})),
        exit_rules,
    )
    .await;
}

async fn assert_exited_at_once(h: &Harness, lead: LeadId, reason: &str) {
    let e = h.only_enrollment(lead).await;
    assert_eq!(
        (e.status, e.exit_reason.as_deref()),
        (EnrollmentStatus::Exited, Some(reason))
    );
    assert_eq!(
        e.ended_at,
        Some(h.now()),
        "exited in the same write, not at the next step"
    );
    h.advance_days(7).await;
    assert_eq!(h.messages(lead).await.len(), 1, "nothing after the exit");
    let exited = h
        .activities(lead)
        .await
        .into_iter()
        .find(|a| a.activity_type == ActivityType::NurtureExited)
        .unwrap();
    assert_eq!(exited.details["reason"], reason);
}

behaviour_test!(exits_immediately_on_conversion, |h| async move {
    two_step(&h, None).await;
    let lead = h.lead().await.lead;
    h.advance_hours(1).await;
    h.event(lead.id, LeadEvent::Converted).await;
    assert_exited_at_once(&h, lead.id, "converted").await;
});

behaviour_test!(
    exits_immediately_on_disqualification_by_patch,
    |h| async move {
        two_step(&h, None).await;
        let lead = h.lead().await.lead;
        h.advance_hours(1).await;
        let w = h
            .patch(
                lead.id,
                LeadPatch {
                    status: Some(LeadStatus::Disqualified),
                    ..Default::default()
                },
            )
            .await;
        assert_eq!(
            w.enrollments.len(),
            1,
            "the answer names the enrollment it ended"
        );
        assert_exited_at_once(&h, lead.id, "disqualified").await;
    }
);

behaviour_test!(exits_immediately_on_explicit_unsubscribe, |h| async move {
    two_step(&h, None).await;
    let lead = h.lead().await.lead;
    h.advance_hours(1).await;
    h.event(lead.id, LeadEvent::Unsubscribed).await;
    assert_exited_at_once(&h, lead.id, "unsubscribed").await;
    let seq2 = h
        .sequence("Manual", vec![email(1, 0, "a")], None, None)
        .await;
    assert!(matches!(
        h.engine.enroll(h.p, lead.id, seq2.id).await.unwrap_err(),
        Error::Unprocessable(_)
    ));
});

behaviour_test!(exits_immediately_on_positive_reply, |h| async move {
    two_step(&h, None).await;
    let lead = h.lead().await.lead;
    h.advance_hours(1).await;
    h.event(
        lead.id,
        LeadEvent::Reply {
            sentiment: Sentiment::Positive,
            until: None,
        },
    )
    .await;
    assert_exited_at_once(&h, lead.id, "positive_reply").await;
});

behaviour_test!(
    positive_reply_exits_even_when_rules_say_nothing_of_it,
    |h| async move {
        two_step(&h, Some(json!({"inactivity_days": 20}))).await;
        let lead = h.lead().await.lead;
        h.advance_hours(1).await;
        h.event(
            lead.id,
            LeadEvent::Reply {
                sentiment: Sentiment::Positive,
                until: None,
            },
        )
        .await;
        assert_exited_at_once(&h, lead.id, "positive_reply").await;
    }
);

behaviour_test!(
    a_neutral_reply_does_not_exit_by_default_but_any_reply_exits_with_on_reply_any,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        h.sequence(
            "Default",
            vec![email(1, 0, "a"), email(2, 72, "a")],
            Some(json!({"segments_any": ["d"]})),
            None,
        )
        .await;
        h.sequence(
            "Any",
            vec![email(1, 0, "a"), email(2, 72, "a")],
            Some(json!({"segments_any": ["a"]})),
            Some(json!({"on_reply": "any"})),
        )
        .await;
        let d = h.lead_with(|l| l.segments = vec!["d".into()]).await.lead;
        let a = h.lead_with(|l| l.segments = vec!["a".into()]).await.lead;
        h.advance_hours(1).await;
        h.event(
            d.id,
            LeadEvent::Reply {
                sentiment: Sentiment::Neutral,
                until: None,
            },
        )
        .await;
        h.event(
            a.id,
            LeadEvent::Reply {
                sentiment: Sentiment::Negative,
                until: None,
            },
        )
        .await;
        assert_eq!(
            h.only_enrollment(d.id).await.status,
            EnrollmentStatus::Active
        );
        let e = h.only_enrollment(a.id).await;
        assert_eq!(
            (e.status, e.exit_reason.as_deref()),
            (EnrollmentStatus::Exited, Some("replied"))
        );
        h.advance_days(4).await;
        assert_eq!(h.messages(d.id).await.len(), 2);
    }
);

behaviour_test!(
    out_of_office_never_exits_and_defers_to_its_until,
    |h| async move {
        two_step(&h, Some(json!({"on_reply": "any"}))).await;
        let lead = h.lead().await.lead;
        h.advance_hours(1).await;
        let back = h.at(24 * 5);
        h.event(
            lead.id,
            LeadEvent::Reply {
                sentiment: Sentiment::OutOfOffice,
                until: Some(back),
            },
        )
        .await;
        let e = h.only_enrollment(lead.id).await;
        assert_eq!(
            (e.status, e.next_step_on),
            (EnrollmentStatus::Active, Some(back))
        );
        h.advance_days(6).await;
        assert_eq!(h.message_hours(lead.id).await, vec![0, 120]);
        let moved = h.activities(lead.id).await.into_iter().find(|a| {
            a.activity_type == ActivityType::NurtureStepScheduled
                && a.details["reason"] == "out_of_office"
        });
        assert!(moved.is_some());
    }
);

behaviour_test!(
    a_hard_bounce_exits_and_a_soft_one_does_not,
    |h| async move {
        two_step(&h, None).await;
        let soft = h.lead().await.lead;
        let hard = h.lead().await.lead;
        h.advance_hours(1).await;
        h.event(soft.id, LeadEvent::Bounced { hard: false }).await;
        assert_eq!(
            h.only_enrollment(soft.id).await.status,
            EnrollmentStatus::Active
        );
        h.event(hard.id, LeadEvent::Bounced { hard: true }).await;
        assert_exited_at_once(&h, hard.id, "bounced").await;
    }
);

behaviour_test!(
    inactivity_exit_counts_from_the_last_engagement,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        h.sequence(
            "Inactive",
            vec![email(1, 0, "a"), email(2, 96, "a"), email(3, 96, "a")],
            Some(json!({})),
            Some(json!({"inactivity_days": 5})),
        )
        .await;
        let engaged = h.lead().await.lead;
        let silent = h.lead().await.lead;
        h.advance_hours(100).await;
        h.event(engaged.id, LeadEvent::EmailOpened).await;
        h.advance_days(7).await;
        // Step 2 at day 4 runs for both (4 < 5); step 3 at day 8: the silent lead has been inactive 8 days.
        let e = h.only_enrollment(silent.id).await;
        assert_eq!(
            (e.status, e.exit_reason.as_deref()),
            (EnrollmentStatus::Exited, Some("inactive"))
        );
        assert_eq!(e.ended_at, Some(h.at(192)));
        assert_eq!(h.message_hours(silent.id).await, vec![0, 96]);
        assert_eq!(
            h.only_enrollment(engaged.id).await.status,
            EnrollmentStatus::Completed
        );
        assert_eq!(h.message_hours(engaged.id).await, vec![0, 96, 192]);
    }
);

behaviour_test!(
    do_not_contact_stops_all_sequences_for_the_lead,
    |h| async move {
        two_step(&h, None).await;
        let manual = h
            .sequence("Manual", vec![email(1, 0, "a")], None, None)
            .await;
        let lead = h.lead().await.lead;
        h.advance_hours(1).await;
        h.patch(
            lead.id,
            LeadPatch {
                do_not_contact: Some(true),
                ..Default::default()
            },
        )
        .await;
        assert_exited_at_once(&h, lead.id, "do_not_contact").await;
        assert!(matches!(
            h.engine.enroll(h.p, lead.id, manual.id).await.unwrap_err(),
            Error::Unprocessable(_)
        ));
        h.advance_days(40).await;
        assert_eq!(
            h.enrollments(lead.id).await.len(),
            1,
            "never auto-enrolled again"
        );
    }
);

behaviour_test!(
    a_lead_marked_do_not_contact_is_never_auto_enrolled,
    |h| async move {
        two_step(&h, None).await;
        let lead = h.lead_with(|l| l.do_not_contact = true).await;
        assert!(lead.enrollments.is_empty());
        let unsub = h.lead_with(|l| l.unsubscribed = true).await;
        assert!(unsub.enrollments.is_empty());
        h.advance_days(2).await;
        assert!(h.enrollments(lead.lead.id).await.is_empty());
        assert!(h.enrollments(unsub.lead.id).await.is_empty());
    }
);

behaviour_test!(
    frequency_cap_is_one_message_per_48_hours_and_defers_not_drops,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        h.sequence(
            "Fast",
            vec![email(1, 0, "a"), email(2, 24, "a"), email(3, 1, "a")],
            Some(json!({})),
            None,
        )
        .await;
        let lead = h.lead().await.lead;
        h.advance_days(6).await;
        assert_eq!(h.message_hours(lead.id).await, vec![0, 48, 96]);
        let deferred: Vec<_> = h
            .activities(lead.id)
            .await
            .into_iter()
            .filter(|a| {
                a.activity_type == ActivityType::NurtureStepScheduled
                    && a.details["reason"] == "frequency_cap"
            })
            .collect();
        assert_eq!(deferred.len(), 2);
        assert_eq!(deferred[0].at, h.at(24));
        assert_eq!(
            deferred[0].details["next_step_on"],
            json!(h.at(48).to_string())
        );
    }
);

behaviour_test!(
    frequency_cap_counts_messages_sent_elsewhere,
    |h| async move {
        two_step(&h, None).await;
        let lead = h
            .lead_with(|l| l.score_band = Some("cold".into()))
            .await
            .lead;
        h.event(lead.id, LeadEvent::OutboundMessage { subject: None })
            .await;
        h.advance_hours(10).await;
        h.patch(
            lead.id,
            LeadPatch {
                score_band: Some(Some("warm".into())),
                ..Default::default()
            },
        )
        .await;
        h.advance_days(2).await;
        let msgs = h.messages(lead.id).await;
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            msgs[1].created_at,
            h.at(48),
            "first nurture email waits 48 h after the external one"
        );
    }
);

behaviour_test!(
    frequency_cap_counts_messages_of_every_sequence,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        let a = h
            .sequence("A", vec![email(1, 0, "a"), email(2, 100, "a")], None, None)
            .await;
        let b = h.sequence("B", vec![email(1, 0, "a")], None, None).await;
        let lead = h.lead().await.lead;
        let e = h.engine.enroll(h.p, lead.id, a.id).await.unwrap();
        h.advance_hours(1).await;
        h.engine
            .exit_enrollment(h.p, e.id, Some("moved".into()))
            .await
            .unwrap();
        h.engine.enroll(h.p, lead.id, b.id).await.unwrap();
        h.advance_days(3).await;
        assert_eq!(h.message_hours(lead.id).await, vec![0, 48]);
    }
);

behaviour_test!(tenant_cap_of_two_per_day, |h| async move {
    h.settings(json!({"max_messages_per_window": 2, "message_window_hours": 24}))
        .await;
    h.template("a", "Hello", "Hi", false).await;
    h.sequence(
        "Fast",
        vec![email(1, 0, "a"), email(2, 1, "a"), email(3, 1, "a")],
        Some(json!({})),
        None,
    )
    .await;
    let lead = h.lead().await.lead;
    h.advance_days(2).await;
    assert_eq!(h.message_hours(lead.id).await, vec![0, 1, 24]);
});

behaviour_test!(
    no_sending_window_by_default_means_any_time,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        h.sequence("Night", vec![email(1, 18, "a")], Some(json!({})), None)
            .await;
        let lead = h.lead().await.lead;
        h.advance_days(1).await;
        assert_eq!(
            h.messages(lead.id).await[0].created_at,
            "2026-01-06T03:00:00Z".parse().unwrap()
        );
    }
);

behaviour_test!(
    sending_window_applies_in_the_lead_timezone_across_dst,
    |h| async move {
        h.settings(json!({"sending_window": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}})).await;
        h.template("a", "Hello", "Hi", false).await;
        h.sequence("Window", vec![email(1, 0, "a")], Some(json!({})), None)
            .await;
        // 2026-03-06 is a Friday; New York springs forward on Sunday 2026-03-08.
        h.engine
            .advance_to("2026-03-06T23:00:00Z".parse().unwrap())
            .await
            .unwrap();
        let ny = h
            .lead_with(|l| l.timezone = Some(TimeZoneName::parse("America/New_York").unwrap()))
            .await
            .lead;
        let tokyo = h
            .lead_with(|l| l.timezone = Some(TimeZoneName::parse("Asia/Tokyo").unwrap()))
            .await
            .lead;
        h.advance_days(4).await;
        // Monday 09:00 EDT (UTC-4, after the change) and Monday 09:00 JST.
        assert_eq!(
            h.messages(ny.id).await[0].created_at,
            "2026-03-09T13:00:00Z".parse().unwrap()
        );
        assert_eq!(
            h.messages(tokyo.id).await[0].created_at,
            "2026-03-09T00:00:00Z".parse().unwrap()
        );
        let why = h.activities(ny.id).await.into_iter().find(|a| {
            a.activity_type == ActivityType::NurtureStepScheduled
                && a.details["reason"] == "sending_window"
        });
        assert!(why.is_some());
    }
);

behaviour_test!(
    every_read_sees_its_own_tenant_only_in_a_read_only_transaction,
    |h| async move {
        // Reads run in read-only transactions (no write lock on SQLite, `READ ONLY` and no row
        // locks on PostgreSQL); each must work there, and see nothing of another tenant.
        use nurture_core::store::{ActivityFilter, EnrollmentFilter, MessageFilter, Page};
        let e = &h.engine;
        h.template("a", "Hello", "Hi", false).await;
        h.template("r", "Review", "Hi", false).await;
        let seq = h
            .sequence(
                "Two",
                vec![
                    email(1, 0, "a"),
                    reviewed_email(2, 48, "r"),
                    step(3, 0, Channel::Task),
                ],
                Some(json!({})),
                None,
            )
            .await;
        let lead = h.lead().await.lead;
        h.advance_days(3).await;
        let enrollment = h.only_enrollment(lead.id).await;
        let approval = h.pending_approvals().await.remove(0);
        let template = TemplateId::parse("a").unwrap();
        let page = Page::first(50);

        let other = h.other_tenant().await;
        for (p, mine) in [(h.p, true), (other, false)] {
            let found = |r: Result<(), Error>| match r {
                Ok(()) => true,
                Err(Error::NotFound(_)) => false,
                Err(e) => panic!("a read failed: {e}"),
            };
            assert_eq!(found(e.get_lead(p, lead.id).await.map(drop)), mine);
            assert_eq!(found(e.get_template(p, &template).await.map(drop)), mine);
            assert_eq!(found(e.get_sequence(p, seq.id).await.map(drop)), mine);
            assert_eq!(found(e.sequence_stats(p, seq.id).await.map(drop)), mine);
            assert_eq!(
                found(e.get_enrollment(p, enrollment.id).await.map(drop)),
                mine
            );
            assert_eq!(found(e.get_approval(p, approval.id).await.map(drop)), mine);
            let n = |len: usize| if mine { len } else { 0 };
            assert_eq!(e.list_templates(p, &page).await.unwrap().items.len(), n(2));
            assert_eq!(e.list_sequences(p, &page).await.unwrap().items.len(), n(1));
            let all = EnrollmentFilter::default();
            assert_eq!(
                e.list_enrollments(p, &all, &page)
                    .await
                    .unwrap()
                    .items
                    .len(),
                n(1)
            );
            assert_eq!(
                e.list_approvals(p, None, &page).await.unwrap().items.len(),
                n(1)
            );
            assert_eq!(e.list_tasks(p, None, &page).await.unwrap().items.len(), 0);
            let messages = MessageFilter::default();
            assert_eq!(
                e.list_messages(p, &messages, &page)
                    .await
                    .unwrap()
                    .items
                    .len(),
                n(1)
            );
            let log = ActivityFilter::default();
            assert_eq!(
                e.list_activities(p, &log, &page)
                    .await
                    .unwrap()
                    .items
                    .is_empty(),
                !mine
            );
        }
    }
);
