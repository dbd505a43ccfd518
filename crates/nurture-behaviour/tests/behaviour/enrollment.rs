//! Seed "Enrollment rules" and SPEC section 4 "Enrollment".

use super::*;

behaviour_test!(
    auto_enrolls_leads_whose_status_is_new_contacted_or_qualified,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        let seq = h
            .sequence("Warm", vec![email(1, 0, "a")], Some(json!({})), None)
            .await;
        for (status, enrolled) in [
            (LeadStatus::New, true),
            (LeadStatus::Contacted, true),
            (LeadStatus::Qualified, true),
            (LeadStatus::Converted, false),
            (LeadStatus::Disqualified, false),
        ] {
            let w = h.lead_with(|l| l.status = status).await;
            assert_eq!(w.enrollments.len(), enrolled as usize, "{status}");
            if enrolled {
                let e = &w.enrollments[0];
                assert_eq!(
                    (e.sequence_id, e.status, e.source),
                    (seq.id, EnrollmentStatus::Active, EnrollmentSource::Auto)
                );
            }
            assert_eq!(h.enrollments(w.lead.id).await.len(), enrolled as usize);
        }
    }
);

behaviour_test!(
    auto_enrolls_only_warm_score_bands_by_default,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        h.sequence("Warm", vec![email(1, 0, "a")], Some(json!({})), None)
            .await;
        assert_eq!(
            h.lead_with(|l| l.score_band = Some("warm".into()))
                .await
                .enrollments
                .len(),
            1
        );
        assert_eq!(
            h.lead_with(|l| l.score_band = Some("cold".into()))
                .await
                .enrollments
                .len(),
            0
        );
        assert_eq!(
            h.lead_with(|l| l.score_band = Some("hot".into()))
                .await
                .enrollments
                .len(),
            0
        );
        assert_eq!(
            h.lead_with(|l| l.score_band = None).await.enrollments.len(),
            0
        );
    }
);

behaviour_test!(
    tenant_defined_warm_bands_replace_the_default,
    |h| async move {
        h.settings(json!({"warm_score_bands": ["hot", "warm-ish"]}))
            .await;
        h.template("a", "Hello", "Hi", false).await;
        h.sequence("Warm", vec![email(1, 0, "a")], Some(json!({})), None)
            .await;
        assert_eq!(
            h.lead_with(|l| l.score_band = Some("hot".into()))
                .await
                .enrollments
                .len(),
            1
        );
        assert_eq!(
            h.lead_with(|l| l.score_band = Some("warm-ish".into()))
                .await
                .enrollments
                .len(),
            1
        );
        assert_eq!(
            h.lead_with(|l| l.score_band = Some("warm".into()))
                .await
                .enrollments
                .len(),
            0
        );
    }
);

behaviour_test!(no_open_reply_thread_in_the_last_14_days, |h| async move {
    h.template("a", "Hello", "Hi", false).await;
    // A lead that replied recently is in conversation: not enrolled until the window passes.
    let lead = h
        .lead_with(|l| l.score_band = Some("cold".into()))
        .await
        .lead;
    h.event(
        lead.id,
        LeadEvent::Reply {
            sentiment: Sentiment::Neutral,
            until: None,
        },
    )
    .await;
    let seq = h
        .sequence("Warm", vec![email(1, 0, "a")], Some(json!({})), None)
        .await;
    let w = h
        .patch(
            lead.id,
            LeadPatch {
                score_band: Some(Some("warm".into())),
                ..Default::default()
            },
        )
        .await;
    assert!(w.enrollments.is_empty(), "replied 0 days ago");
    h.advance_days(13).await;
    assert!(
        h.enrollments(lead.id).await.is_empty(),
        "13 days after the reply"
    );
    h.advance_days(2).await;
    let e = h.only_enrollment(lead.id).await;
    assert_eq!(e.sequence_id, seq.id);
    // The sweep enrolled it on the first whole hour after 14 days had passed.
    assert_eq!(e.enrolled_on, h.at(14 * 24 + 1));
});

behaviour_test!(
    out_of_office_is_not_a_reply_for_the_reply_window,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        let lead = h
            .lead_with(|l| l.score_band = Some("cold".into()))
            .await
            .lead;
        h.event(
            lead.id,
            LeadEvent::Reply {
                sentiment: Sentiment::OutOfOffice,
                until: None,
            },
        )
        .await;
        h.sequence("Warm", vec![email(1, 0, "a")], Some(json!({})), None)
            .await;
        let w = h
            .patch(
                lead.id,
                LeadPatch {
                    score_band: Some(Some("warm".into())),
                    ..Default::default()
                },
            )
            .await;
        assert_eq!(w.enrollments.len(), 1);
        assert_eq!(w.lead.last_reply_at, None);
    }
);

behaviour_test!(tenant_reply_window_and_rule_override, |h| async move {
    h.settings(json!({"reply_window_days": 3})).await;
    h.template("a", "Hello", "Hi", false).await;
    let quick = h
        .lead_with(|l| l.score_band = Some("cold".into()))
        .await
        .lead;
    h.event(
        quick.id,
        LeadEvent::Reply {
            sentiment: Sentiment::Negative,
            until: None,
        },
    )
    .await;
    h.sequence("Warm", vec![email(1, 0, "a")], Some(json!({})), None)
        .await;
    h.advance_days(2).await;
    assert!(
        h.patch(
            quick.id,
            LeadPatch {
                score_band: Some(Some("warm".into())),
                ..Default::default()
            }
        )
        .await
        .enrollments
        .is_empty()
    );
    h.advance_days(2).await;
    assert_eq!(
        h.enrollments(quick.id).await.len(),
        1,
        "3-day tenant window has passed"
    );
});

behaviour_test!(
    a_lead_already_in_an_active_sequence_is_not_enrolled_again,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        let first = h
            .sequence(
                "First",
                vec![email(1, 0, "a"), email(2, 100, "a")],
                Some(json!({})),
                None,
            )
            .await;
        let lead = h.lead().await.lead;
        h.sequence("Second", vec![email(1, 0, "a")], Some(json!({})), None)
            .await;
        h.patch(
            lead.id,
            LeadPatch {
                score: Some(70),
                ..Default::default()
            },
        )
        .await;
        h.advance_days(2).await;
        let e = h.only_enrollment(lead.id).await;
        assert_eq!(e.sequence_id, first.id);
    }
);

behaviour_test!(
    the_database_enforces_one_live_enrollment_per_lead,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        h.sequence("First", vec![email(1, 0, "a")], Some(json!({})), None)
            .await;
        let w = h.lead().await;
        let mut twin = w.enrollments[0].clone();
        twin.id = new_id();
        let mut tx = h
            .store
            .begin(nurture_core::store::Scope::System)
            .await
            .unwrap();
        let fx = nurture_core::store::Effects {
            new_enrollments: vec![twin],
            ..Default::default()
        };
        let err = tx.apply(&fx).await.unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    }
);

behaviour_test!(
    highest_priority_wins_then_the_oldest_sequence,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        let old_low = h
            .draft("old low", vec![email(1, 0, "a")], Some(json!({})), None, 0)
            .await;
        let high = h
            .draft("high", vec![email(1, 0, "a")], Some(json!({})), None, 5)
            .await;
        let new_high = h
            .draft("new high", vec![email(1, 0, "a")], Some(json!({})), None, 5)
            .await;
        for s in [&new_high, &old_low, &high] {
            h.engine.activate_sequence(h.p, s.id).await.unwrap();
        }
        let w = h.lead().await;
        assert_eq!(w.enrollments[0].sequence_id, high.id);
    }
);

behaviour_test!(entry_rules_decide_who_is_enrolled, |h| async move {
    h.template("a", "Hello", "Hi", false).await;
    h.sequence(
        "SMB",
        vec![email(1, 0, "a")],
        Some(json!({"statuses": ["new"], "segments_any": ["smb"], "min_score": 50, "when": {"field": "attributes.country", "op": "in", "value": ["FR", "DE"]}})),
        None,
    )
    .await;
    let ok = |l: &mut LeadInput| {
        l.status = LeadStatus::New;
        l.segments = vec!["smb".into()];
        l.attributes = json!({"country": "FR"}).as_object().unwrap().clone();
    };
    assert_eq!(h.lead_with(ok).await.enrollments.len(), 1);
    assert_eq!(
        h.lead_with(|l| {
            ok(l);
            l.status = LeadStatus::Qualified
        })
        .await
        .enrollments
        .len(),
        0
    );
    assert_eq!(
        h.lead_with(|l| {
            ok(l);
            l.segments = vec!["ent".into()]
        })
        .await
        .enrollments
        .len(),
        0
    );
    assert_eq!(
        h.lead_with(|l| {
            ok(l);
            l.score = 49
        })
        .await
        .enrollments
        .len(),
        0
    );
    assert_eq!(
        h.lead_with(|l| {
            ok(l);
            l.attributes = json!({"country": "US"}).as_object().unwrap().clone()
        })
        .await
        .enrollments
        .len(),
        0
    );
});

behaviour_test!(
    manual_only_sequences_take_manual_enrollment,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        let manual = h
            .sequence("Manual", vec![email(1, 0, "a")], None, None)
            .await;
        let lead = h.lead_with(|l| l.score_band = Some("cold".into())).await;
        assert!(lead.enrollments.is_empty());
        h.advance_days(2).await;
        assert!(
            h.enrollments(lead.lead.id).await.is_empty(),
            "the sweep never enrolls into a manual-only sequence"
        );
        let e = h.engine.enroll(h.p, lead.lead.id, manual.id).await.unwrap();
        assert_eq!(
            (e.source, e.status, e.current_step_order.get()),
            (EnrollmentSource::Manual, EnrollmentStatus::Active, 1)
        );
        let types = h.activity_types(lead.lead.id).await;
        assert_eq!(types, vec!["nurture_enrolled"]);
        let enrolled = &h.activities(lead.lead.id).await[0];
        assert_eq!(enrolled.details["source"], "manual");
        assert_eq!(enrolled.details["next_step_on"], json!(h.now().to_string()));
    }
);

behaviour_test!(
    manual_enrollment_passes_the_same_safety_checks,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        let seq = h
            .sequence(
                "Manual",
                vec![email(1, 0, "a"), email(2, 48, "a")],
                None,
                None,
            )
            .await;
        let draft = h
            .draft("Draft", vec![email(1, 0, "a")], None, None, 0)
            .await;
        let dnc = h.lead_with(|l| l.do_not_contact = true).await.lead;
        let unsub = h.lead_with(|l| l.unsubscribed = true).await.lead;
        let fine = h.lead().await.lead;
        for (lead, s) in [(dnc.id, seq.id), (unsub.id, seq.id), (fine.id, draft.id)] {
            let err = h.engine.enroll(h.p, lead, s).await.unwrap_err();
            assert!(matches!(err, Error::Unprocessable(_)), "{err:?}");
        }
        let first = h.engine.enroll(h.p, fine.id, seq.id).await.unwrap();
        match h.engine.enroll(h.p, fine.id, seq.id).await.unwrap_err() {
            Error::Conflict { conflicting, .. } => {
                assert_eq!(conflicting.unwrap()["enrollment_id"], json!(first.id))
            }
            other => panic!("{other:?}"),
        }
        h.engine.exit_enrollment(h.p, first.id, None).await.unwrap();
        match h.engine.enroll(h.p, fine.id, seq.id).await.unwrap_err() {
            Error::Conflict { conflicting, .. } => {
                assert_eq!(conflicting.unwrap()["enrollment_id"], json!(first.id))
            }
            other => panic!("cooldown: {other:?}"),
        }
        let other = h.other_tenant().await;
        assert!(matches!(
            h.engine.enroll(other, fine.id, seq.id).await.unwrap_err(),
            Error::NotFound(_)
        ));
    }
);

behaviour_test!(reenrollment_cooldown_is_30_days, |h| async move {
    h.template("a", "Hello", "Hi", false).await;
    let seq = h
        .sequence("Once", vec![email(1, 0, "a")], Some(json!({})), None)
        .await;
    let lead = h.lead().await.lead;
    h.advance_hours(1).await;
    assert_eq!(
        h.only_enrollment(lead.id).await.status,
        EnrollmentStatus::Completed
    );
    h.advance_days(29).await;
    assert_eq!(
        h.enrollments(lead.id).await.len(),
        1,
        "still cooling down after 29 days"
    );
    h.advance_days(2).await;
    let all = h.enrollments(lead.id).await;
    assert_eq!(all.len(), 2, "enrolled again once 30 days passed");
    assert!(all.iter().all(|e| e.sequence_id == seq.id));
    assert_eq!(
        all[1].enrolled_on,
        h.at(30 * 24),
        "the first sweep at or after 30 days"
    );
});

behaviour_test!(tenant_cooldown_setting_is_honoured, |h| async move {
    h.settings(json!({"reenrollment_cooldown_days": 2})).await;
    h.template("a", "Hello", "Hi", false).await;
    h.sequence("Once", vec![email(1, 0, "a")], Some(json!({})), None)
        .await;
    let lead = h.lead().await.lead;
    h.advance_days(3).await;
    assert_eq!(h.enrollments(lead.id).await.len(), 2);
});

behaviour_test!(
    the_sweep_enrolls_leads_whose_rules_become_true_with_time,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        h.sequence("Dormant", vec![email(1, 0, "a")], Some(json!({"when": {"field": "attributes.signed_up", "op": "older_than_days", "value": 7}})), None).await;
        let lead = h
            .lead_with(|l| {
                l.attributes = json!({"signed_up": "2026-01-04T12:00:00Z"})
                    .as_object()
                    .unwrap()
                    .clone()
            })
            .await;
        assert!(lead.enrollments.is_empty());
        h.advance_days(6).await;
        assert!(h.enrollments(lead.lead.id).await.is_empty());
        h.advance_days(1).await;
        let e = h.only_enrollment(lead.lead.id).await;
        assert_eq!(e.enrolled_on, "2026-01-11T13:00:00Z".parse().unwrap());
    }
);

behaviour_test!(
    the_sweep_enrolls_every_page_of_candidates_exactly_once,
    |h| async move {
        // More than two pages of 5,000 (read one page ahead while the last is written), with
        // non-candidates spread through them.
        h.template("a", "Hello", "Hi", false).await;
        let draft = h
            .draft("Imported", vec![email(1, 0, "a")], Some(json!({})), None, 0)
            .await;
        let leads = h.imported_leads(12_001, |i| i % 7 == 0).await;
        let candidates = leads
            .iter()
            .filter(|l| l.status != LeadStatus::Converted)
            .count() as i64;
        h.engine.activate_sequence(h.p, draft.id).await.unwrap();
        h.advance_hours(1).await;
        let stats = h.engine.sequence_stats(h.p, draft.id).await.unwrap();
        assert_eq!(stats.enrolled, candidates);
        for lead in [
            &leads[1],
            &leads[5_000],
            &leads[5_001],
            &leads[10_000],
            &leads[12_000],
        ] {
            assert_eq!(h.enrollments(lead.id).await.len(), 1, "lead {}", lead.email);
        }
        assert!(h.enrollments(leads[7].id).await.is_empty(), "converted");
        h.advance_hours(1).await;
        let again = h.engine.sequence_stats(h.p, draft.id).await.unwrap();
        assert_eq!(
            again.enrolled, candidates,
            "the next sweep finds nobody new"
        );
    }
);
