//! SPEC section 4 "Sequence lifecycle" and the seed's "max 6 sequence steps over 21 days".

use super::*;

fn invalid_paths(err: Error) -> Vec<String> {
    match err {
        Error::Invalid(errors) => errors
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

behaviour_test!(
    activation_allows_at_most_6_steps_over_21_days,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        let six: Vec<Step> = (1..=6)
            .map(|i| email(i, if i == 1 { 0 } else { 100 }, "a"))
            .collect();
        let ok = h.draft("Six", six.clone(), None, None, 0).await;
        assert_eq!(
            h.engine.activate_sequence(h.p, ok.id).await.unwrap().status,
            SequenceStatus::Active
        );

        let mut seven = six.clone();
        seven.push(email(7, 0, "a"));
        let s = h.draft("Seven", seven, None, None, 0).await;
        let errs = invalid_paths(h.engine.activate_sequence(h.p, s.id).await.unwrap_err());
        assert!(
            errs.iter()
                .any(|e| e.starts_with("steps:") && e.contains("maximum of 6")),
            "{errs:?}"
        );

        let long = vec![email(1, 0, "a"), email(2, 21 * 24 + 1, "a")];
        let s = h.draft("Long", long, None, None, 0).await;
        let errs = invalid_paths(h.engine.activate_sequence(h.p, s.id).await.unwrap_err());
        assert!(
            errs.iter()
                .any(|e| e.contains("505 hours") && e.contains("21 days")),
            "{errs:?}"
        );
        assert_eq!(
            h.engine.get_sequence(h.p, s.id).await.unwrap().status,
            SequenceStatus::Draft,
            "nothing half-written"
        );

        let exact = vec![email(1, 0, "a"), email(2, 21 * 24, "a")];
        let s = h.draft("Exact", exact, None, None, 0).await;
        assert!(h.engine.activate_sequence(h.p, s.id).await.is_ok());
    }
);

behaviour_test!(
    tenant_limits_on_steps_and_span_are_honoured,
    |h| async move {
        h.settings(json!({"max_steps": 2, "max_span_days": 1}))
            .await;
        h.template("a", "Hello", "Hi", false).await;
        let s = h
            .draft(
                "Three",
                vec![email(1, 0, "a"), email(2, 1, "a"), email(3, 1, "a")],
                None,
                None,
                0,
            )
            .await;
        assert!(matches!(
            h.engine.activate_sequence(h.p, s.id).await.unwrap_err(),
            Error::Invalid(_)
        ));
        let s = h
            .draft(
                "Long",
                vec![email(1, 0, "a"), email(2, 25, "a")],
                None,
                None,
                0,
            )
            .await;
        assert!(matches!(
            h.engine.activate_sequence(h.p, s.id).await.unwrap_err(),
            Error::Invalid(_)
        ));
    }
);

behaviour_test!(
    activation_needs_a_step_and_existing_templates_with_known_fields,
    |h| async move {
        let empty = h.draft("Empty", vec![], None, None, 0).await;
        let errs = invalid_paths(h.engine.activate_sequence(h.p, empty.id).await.unwrap_err());
        assert!(
            errs.iter()
                .any(|e| e.starts_with("steps:") && e.contains("at least one")),
            "{errs:?}"
        );

        let missing = h
            .draft("Missing", vec![email(1, 0, "nope")], None, None, 0)
            .await;
        let errs = invalid_paths(
            h.engine
                .activate_sequence(h.p, missing.id)
                .await
                .unwrap_err(),
        );
        assert_eq!(
            errs,
            vec!["steps[0].template_id: no template with id \"nope\"".to_string()]
        );
    }
);

behaviour_test!(steps_are_validated_when_written, |h| async move {
    let input = SequenceInput {
        name: "Bad".into(),
        priority: 0,
        entry_rules: None,
        exit_rules: Default::default(),
        steps: vec![
            step(1, 0, Channel::Email),
            email(3, 0, "a"),
            Step {
                template_id: Some(TemplateId::parse("a").unwrap()),
                ..step(3, 0, Channel::Wait)
            },
        ],
    };
    let errs = invalid_paths(h.engine.create_sequence(h.p, input).await.unwrap_err());
    assert_eq!(
        errs,
        vec![
            "steps[0].template_id: an email step needs a template_id".to_string(),
            "steps[1].step_order: step orders run 1..N without gaps in array order: expected 2, got 3".to_string(),
            "steps[2].template_id: a wait step sends nothing and takes no template".to_string(),
        ]
    );
});

behaviour_test!(lifecycle_allows_only_its_transitions, |h| async move {
    h.template("a", "Hello", "Hi", false).await;
    let s = h.draft("Life", vec![email(1, 0, "a")], None, None, 0).await;
    let conflict =
        |r: Result<Sequence, Error>| assert!(matches!(r, Err(Error::Conflict { .. })), "{r:?}");
    conflict(h.engine.pause_sequence(h.p, s.id).await);
    conflict(h.engine.resume_sequence(h.p, s.id).await);
    assert_eq!(
        h.engine.activate_sequence(h.p, s.id).await.unwrap().status,
        SequenceStatus::Active
    );
    conflict(h.engine.activate_sequence(h.p, s.id).await);
    conflict(h.engine.resume_sequence(h.p, s.id).await);
    assert_eq!(
        h.engine.pause_sequence(h.p, s.id).await.unwrap().status,
        SequenceStatus::Paused
    );
    conflict(h.engine.activate_sequence(h.p, s.id).await);
    assert_eq!(
        h.engine.resume_sequence(h.p, s.id).await.unwrap().status,
        SequenceStatus::Active
    );
    assert_eq!(
        h.engine.archive_sequence(h.p, s.id).await.unwrap().status,
        SequenceStatus::Archived
    );
    conflict(h.engine.activate_sequence(h.p, s.id).await);
    conflict(h.engine.archive_sequence(h.p, s.id).await);
    let d = h.draft("Straight to archive", vec![], None, None, 0).await;
    assert_eq!(
        h.engine.archive_sequence(h.p, d.id).await.unwrap().status,
        SequenceStatus::Archived
    );
});

behaviour_test!(
    a_paused_sequence_executes_nothing_and_enrolls_no_one,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        let s = h
            .sequence(
                "Pausable",
                vec![email(1, 0, "a"), email(2, 48, "a")],
                Some(json!({})),
                None,
            )
            .await;
        let lead = h.lead().await.lead;
        h.advance_hours(1).await;
        h.engine.pause_sequence(h.p, s.id).await.unwrap();
        let newcomer = h.lead().await;
        assert!(newcomer.enrollments.is_empty());
        h.advance_days(5).await;
        assert_eq!(h.messages(lead.id).await.len(), 1);
        assert!(h.enrollments(newcomer.lead.id).await.is_empty());
        assert!(matches!(
            h.engine
                .enroll(h.p, newcomer.lead.id, s.id)
                .await
                .unwrap_err(),
            Error::Unprocessable(_)
        ));
        h.engine.resume_sequence(h.p, s.id).await.unwrap();
        h.advance_hours(1).await;
        assert_eq!(
            h.message_hours(lead.id).await,
            vec![0, 121],
            "the overdue step runs at once when resumed"
        );
        assert_eq!(
            h.enrollments(newcomer.lead.id).await.len(),
            1,
            "the sweep enrolls again"
        );
    }
);

behaviour_test!(
    steps_change_only_in_draft_or_paused_and_enrollments_continue_at_their_pointer,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        h.template("b", "Second {{ first_name }}", "B", false).await;
        let s = h
            .sequence(
                "Edit",
                vec![email(1, 0, "a"), email(2, 48, "a"), email(3, 48, "a")],
                Some(json!({})),
                None,
            )
            .await;
        let lead = h.lead().await.lead;
        h.advance_hours(1).await;
        let err = h
            .engine
            .replace_steps(h.p, s.id, vec![email(1, 0, "a")])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }));
        h.engine.pause_sequence(h.p, s.id).await.unwrap();
        h.engine
            .replace_steps(h.p, s.id, vec![email(1, 0, "a"), email(2, 48, "b")])
            .await
            .unwrap();
        h.engine.resume_sequence(h.p, s.id).await.unwrap();
        h.advance_days(3).await;
        let msgs = h.messages(lead.id).await;
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            msgs[1].subject, "Second Ada",
            "step 2 runs with the new content"
        );
        assert_eq!(
            h.only_enrollment(lead.id).await.status,
            EnrollmentStatus::Completed
        );

        // A pointer past the new end completes the enrollment.
        let other = h
            .lead_with(|l| l.email = EmailAddress::parse("late@example.com").unwrap())
            .await
            .lead;
        let _ = other;
        let t = h
            .sequence(
                "Shrink",
                vec![email(1, 0, "a"), email(2, 48, "a"), email(3, 48, "a")],
                None,
                None,
            )
            .await;
        let lone = h
            .lead_with(|l| l.score_band = Some("cold".into()))
            .await
            .lead;
        h.engine.enroll(h.p, lone.id, t.id).await.unwrap();
        h.advance_days(2).await;
        h.engine.pause_sequence(h.p, t.id).await.unwrap();
        h.engine
            .replace_steps(h.p, t.id, vec![email(1, 0, "a")])
            .await
            .unwrap();
        h.engine.resume_sequence(h.p, t.id).await.unwrap();
        h.advance_days(3).await;
        let e = h.only_enrollment(lone.id).await;
        assert_eq!(e.status, EnrollmentStatus::Completed);
        assert_eq!(h.messages(lone.id).await.len(), 2);
    }
);

behaviour_test!(archiving_exits_every_live_enrollment, |h| async move {
    h.template("a", "Hello", "Hi", false).await;
    let s = h
        .sequence(
            "Archive",
            vec![email(1, 0, "a"), reviewed_email(2, 24, "a")],
            Some(json!({})),
            None,
        )
        .await;
    let active = h.lead().await.lead;
    h.advance_hours(1).await;
    let waiting = h.lead().await.lead;
    h.advance_days(2).await;
    assert_eq!(
        h.only_enrollment(waiting.id).await.status,
        EnrollmentStatus::Paused
    );
    let _ = active;
    h.engine.archive_sequence(h.p, s.id).await.unwrap();
    for lead in [active.id, waiting.id] {
        let e = h.only_enrollment(lead).await;
        assert_eq!(
            (e.status, e.exit_reason.as_deref()),
            (EnrollmentStatus::Exited, Some("sequence_archived"))
        );
    }
    assert!(h.pending_approvals().await.is_empty());
});

behaviour_test!(pause_resume_and_exit_by_hand, |h| async move {
    h.template("a", "Hello", "Hi", false).await;
    h.sequence(
        "Hand",
        vec![email(1, 0, "a"), email(2, 24, "a")],
        Some(json!({})),
        None,
    )
    .await;
    let lead = h.lead().await.lead;
    h.advance_hours(1).await;
    let e = h.only_enrollment(lead.id).await;
    let paused = h.engine.pause_enrollment(h.p, e.id).await.unwrap();
    assert_eq!(
        (paused.status, paused.paused_reason),
        (EnrollmentStatus::Paused, Some(PauseReason::Manual))
    );
    h.advance_days(3).await;
    assert_eq!(h.messages(lead.id).await.len(), 1);
    let resumed = h.engine.resume_enrollment(h.p, e.id).await.unwrap();
    assert_eq!(resumed.status, EnrollmentStatus::Active);
    h.advance_hours(1).await;
    assert_eq!(h.message_hours(lead.id).await, vec![0, 73]);
    let again = h
        .engine
        .exit_enrollment(h.p, e.id, Some("sales took over".into()))
        .await
        .unwrap_err();
    assert!(matches!(again, Error::Conflict { .. }), "completed already");
    let l2 = h.lead().await.lead;
    let e2 = h.only_enrollment(l2.id).await;
    let out = h
        .engine
        .exit_enrollment(h.p, e2.id, Some("sales took over".into()))
        .await
        .unwrap();
    assert_eq!(out.exit_reason.as_deref(), Some("sales took over"));
});
