//! Seed "Step execution rules" and SPEC section 4 "Step execution".

use super::*;

behaviour_test!(
    steps_execute_in_order_with_delay_hours_between_them,
    |h| async move {
        h.template("a", "Hello {{ first_name }}", "Hi {{ first_name }}", false)
            .await;
        h.sequence(
            "Three",
            vec![email(1, 0, "a"), email(2, 72, "a"), email(3, 96, "a")],
            Some(json!({})),
            None,
        )
        .await;
        let lead = h.lead().await.lead;
        h.advance_days(10).await;
        assert_eq!(h.message_hours(lead.id).await, vec![0, 72, 168]);
        let msgs = h.messages(lead.id).await;
        let orders: Vec<i64> = msgs.iter().map(|m| m.step_order.unwrap().get()).collect();
        assert_eq!(orders, vec![1, 2, 3]);
        assert_eq!(msgs[0].subject, "Hello Ada");
        assert_eq!(msgs[0].to, lead.email.as_str());
        let e = h.only_enrollment(lead.id).await;
        assert_eq!(e.status, EnrollmentStatus::Completed);
        assert_eq!(e.ended_at, Some(h.at(168)));
        assert_eq!(
            h.activity_types(lead.id).await,
            vec![
                "nurture_enrolled",
                "nurture_step_executed",
                "nurture_step_scheduled",
                "nurture_step_executed",
                "nurture_step_scheduled",
                "nurture_step_executed",
                "nurture_completed",
            ]
        );
    }
);

behaviour_test!(
    first_step_is_due_at_enrollment_plus_its_delay,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        h.sequence("Late start", vec![email(1, 5, "a")], Some(json!({})), None)
            .await;
        let w = h.lead().await;
        let e = &w.enrollments[0];
        assert_eq!(e.current_step_order.get(), 1);
        assert_eq!(e.enrolled_on, h.at(0));
        assert_eq!(e.next_step_on, Some(h.at(5)));
        h.advance_hours(4).await;
        assert!(h.messages(w.lead.id).await.is_empty());
        h.advance_hours(1).await;
        assert_eq!(h.message_hours(w.lead.id).await, vec![5]);
    }
);

behaviour_test!(wait_step_does_nothing_but_delay, |h| async move {
    h.template("a", "Hello", "Hi", false).await;
    h.sequence(
        "Wait",
        vec![step(1, 0, Channel::Wait), email(2, 24, "a")],
        Some(json!({})),
        None,
    )
    .await;
    let lead = h.lead().await.lead;
    h.advance_hours(23).await;
    assert!(h.messages(lead.id).await.is_empty());
    assert!(h.open_tasks().await.is_empty());
    h.advance_hours(1).await;
    assert_eq!(h.message_hours(lead.id).await, vec![24]);
});

behaviour_test!(
    step_condition_false_skips_the_step_and_moves_on,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        let mut s1 = email(1, 0, "a");
        s1.conditions = Some(
            nurture_core::rules::Condition::parse(
                &json!({"field": "score", "op": "gte", "value": 80}),
                "c",
            )
            .unwrap(),
        );
        h.sequence("Cond", vec![s1, email(2, 48, "a")], Some(json!({})), None)
            .await;
        let lead = h.lead().await.lead; // score 60
        h.advance_days(3).await;
        assert_eq!(h.message_hours(lead.id).await, vec![48]);
        let skipped: Vec<_> = h
            .activities(lead.id)
            .await
            .into_iter()
            .filter(|a| a.activity_type == ActivityType::NurtureStepSkipped)
            .collect();
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].step_order.unwrap().get(), 1);
        assert_eq!(skipped[0].details["reason"], "conditions");
    }
);

behaviour_test!(each_step_rechecks_the_lead_before_it_acts, |h| async move {
    // The step condition reads the lead as it is when the step comes due, not at enrollment.
    h.template("a", "Hello", "Hi", false).await;
    let mut s2 = email(2, 48, "a");
    s2.conditions = Some(
        nurture_core::rules::Condition::parse(
            &json!({"field": "attributes.plan", "op": "eq", "value": "pro"}),
            "c",
        )
        .unwrap(),
    );
    h.sequence(
        "Recheck",
        vec![email(1, 0, "a"), s2],
        Some(json!({})),
        Some(json!({"when": {"field": "score", "op": "lt", "value": 10}})),
    )
    .await;
    let lead = h.lead().await.lead;
    h.advance_hours(1).await;
    h.patch(
        lead.id,
        LeadPatch {
            attributes: Some(json!({"plan": "pro"}).as_object().unwrap().clone()),
            ..Default::default()
        },
    )
    .await;
    h.advance_days(2).await;
    assert_eq!(
        h.message_hours(lead.id).await,
        vec![0, 48],
        "step 2 ran because the lead became pro"
    );

    let other = h.lead().await.lead;
    h.advance_hours(1).await;
    h.patch(
        other.id,
        LeadPatch {
            score: Some(5),
            ..Default::default()
        },
    )
    .await;
    h.advance_days(3).await;
    let e = h.only_enrollment(other.id).await;
    assert_eq!(e.status, EnrollmentStatus::Exited);
    assert_eq!(e.exit_reason.as_deref(), Some("exit_rule"));
    assert_eq!(h.messages(other.id).await.len(), 1);
});

behaviour_test!(
    a_template_naming_a_missing_field_is_skipped_never_sent_blank,
    |h| async move {
        h.template("a", "Hello {{ company }}", "Hi", false).await;
        h.sequence("Blank", vec![email(1, 0, "a")], Some(json!({})), None)
            .await;
        let lead = h.lead_with(|l| l.company = None).await.lead;
        h.advance_hours(1).await;
        assert!(h.messages(lead.id).await.is_empty());
        let acts = h.activities(lead.id).await;
        let skipped = acts
            .iter()
            .find(|a| a.activity_type == ActivityType::NurtureStepSkipped)
            .expect("skipped");
        assert_eq!(skipped.details["reason"], "template_error");
        assert_eq!(
            h.only_enrollment(lead.id).await.status,
            EnrollmentStatus::Completed
        );
    }
);

behaviour_test!(task_step_pauses_until_the_task_is_done, |h| async move {
    h.template("a", "Hello", "Hi", false).await;
    let owner = uuid::Uuid::now_v7();
    h.sequence(
        "Call",
        vec![step(1, 0, Channel::CallReminder), email(2, 24, "a")],
        Some(json!({})),
        None,
    )
    .await;
    let lead = h.lead_with(|l| l.owner_id = Some(owner)).await.lead;
    h.advance_hours(1).await;
    let e = h.only_enrollment(lead.id).await;
    assert_eq!(e.status, EnrollmentStatus::Paused);
    assert_eq!(e.paused_reason, Some(PauseReason::AwaitingTask));
    let tasks = h.open_tasks().await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].channel, Channel::CallReminder);
    assert_eq!(tasks[0].assignee_id, Some(owner));
    assert_eq!(tasks[0].title, "Call Ada Lovelace");
    h.advance_days(5).await;
    assert!(
        h.messages(lead.id).await.is_empty(),
        "nothing runs while the task is open"
    );
    h.engine.complete_task(h.p, tasks[0].id).await.unwrap();
    let e = h.only_enrollment(lead.id).await;
    assert_eq!(e.status, EnrollmentStatus::Active);
    assert_eq!(e.current_step_order.get(), 2);
    let done_at = h.now();
    assert_eq!(
        e.next_step_on,
        Some(done_at + jiff::SignedDuration::from_hours(24))
    );
    h.advance_days(1).await;
    assert_eq!(h.messages(lead.id).await.len(), 1);
    let types = h.activity_types(lead.id).await;
    assert!(
        types.contains(&"nurture_paused")
            && types.contains(&"nurture_resumed")
            && types.contains(&"task_created"),
        "{types:?}"
    );
    let again = h.engine.complete_task(h.p, tasks[0].id).await.unwrap_err();
    assert!(matches!(again, Error::Conflict { .. }), "{again:?}");
});
