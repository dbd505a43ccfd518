//! Seed "HITL and safety" (approval part) and SPEC section 4 "HITL".

use super::*;

behaviour_test!(
    approval_required_pauses_until_a_human_approves,
    |h| async move {
        h.template("a", "Hello {{ first_name }}", "Hi {{ first_name }}", false)
            .await;
        h.sequence(
            "Reviewed",
            vec![reviewed_email(1, 0, "a"), email(2, 48, "a")],
            Some(json!({})),
            None,
        )
        .await;
        let lead = h.lead().await.lead;
        h.advance_hours(1).await;
        let e = h.only_enrollment(lead.id).await;
        assert_eq!(
            (e.status, e.paused_reason),
            (
                EnrollmentStatus::Paused,
                Some(PauseReason::AwaitingApproval)
            )
        );
        assert!(h.messages(lead.id).await.is_empty());
        let pending = h.pending_approvals().await;
        assert_eq!(pending.len(), 1);
        let a = &pending[0];
        assert_eq!(
            (a.lead_id, a.step_order.get(), a.author),
            (lead.id, 1, ApprovalAuthor::Template)
        );
        assert_eq!(
            (a.subject.as_str(), a.body.as_str()),
            ("Hello Ada", "Hi Ada")
        );
        h.advance_days(3).await;
        assert!(
            h.messages(lead.id).await.is_empty(),
            "nothing is sent while the approval waits"
        );

        let approved = h
            .engine
            .approve(h.p, a.id, ApprovalEdit::default())
            .await
            .unwrap();
        assert_eq!(approved.status, ApprovalStatus::Approved);
        assert_eq!(approved.decided_by, Some(h.p.user_id));
        let e = h.only_enrollment(lead.id).await;
        assert_eq!(
            (e.status, e.current_step_order.get()),
            (EnrollmentStatus::Active, 2)
        );
        let msgs = h.messages(lead.id).await;
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].created_at, h.now());
        let types = h.activity_types(lead.id).await;
        for t in [
            "approval_requested",
            "nurture_paused",
            "approval_decided",
            "nurture_resumed",
            "nurture_step_executed",
        ] {
            assert!(types.contains(&t), "{t} missing from {types:?}");
        }
        assert!(matches!(
            h.engine
                .approve(h.p, a.id, ApprovalEdit::default())
                .await
                .unwrap_err(),
            Error::Conflict { .. }
        ));
    }
);

behaviour_test!(
    approve_with_edits_sends_the_edited_message,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        h.sequence(
            "Reviewed",
            vec![reviewed_email(1, 0, "a")],
            Some(json!({})),
            None,
        )
        .await;
        let lead = h.lead().await.lead;
        h.advance_hours(1).await;
        let a = h.pending_approvals().await.remove(0);
        let edit = ApprovalEdit {
            subject: Some("Better subject".into()),
            body: Some("Edited by a human.".into()),
            html_body: None,
        };
        h.engine.approve(h.p, a.id, edit).await.unwrap();
        let m = h.messages(lead.id).await.remove(0);
        assert_eq!(
            (m.subject.as_str(), m.body.as_str()),
            ("Better subject", "Edited by a human.")
        );
        let empty = ApprovalEdit {
            body: Some("  ".into()),
            ..Default::default()
        };
        let a2 = h.engine.get_approval(h.p, a.id).await.unwrap();
        assert_eq!(a2.body, "Edited by a human.");
        assert!(matches!(
            h.engine.draft_approval(h.p, a.id, empty).await.unwrap_err(),
            Error::Conflict { .. }
        ));
    }
);

behaviour_test!(reject_skips_the_step_or_exits_when_asked, |h| async move {
    h.template("a", "Hello", "Hi", false).await;
    h.sequence(
        "Reviewed",
        vec![reviewed_email(1, 0, "a"), email(2, 48, "a")],
        Some(json!({})),
        None,
    )
    .await;
    let skip = h.lead().await.lead;
    let stop = h.lead().await.lead;
    h.advance_hours(1).await;
    let pending = h.pending_approvals().await;
    let of = |lead: LeadId| pending.iter().find(|a| a.lead_id == lead).unwrap().id;
    h.engine
        .reject(h.p, of(skip.id), Some("off tone".into()), false)
        .await
        .unwrap();
    h.engine.reject(h.p, of(stop.id), None, true).await.unwrap();

    let e = h.only_enrollment(skip.id).await;
    assert_eq!(
        (e.status, e.current_step_order.get()),
        (EnrollmentStatus::Active, 2)
    );
    let e = h.only_enrollment(stop.id).await;
    assert_eq!(
        (e.status, e.exit_reason.as_deref()),
        (EnrollmentStatus::Exited, Some("approval_rejected"))
    );
    h.advance_days(3).await;
    assert_eq!(
        h.message_hours(skip.id).await,
        vec![49],
        "step 1 skipped, step 2 sent 48 h after the rejection"
    );
    assert!(h.messages(stop.id).await.is_empty());
});

behaviour_test!(
    preapproved_templates_skip_review_only_when_the_tenant_allows,
    |h| async move {
        h.template("pre", "Hello", "Hi", true).await;
        h.sequence(
            "Reviewed",
            vec![reviewed_email(1, 0, "pre")],
            Some(json!({})),
            None,
        )
        .await;
        let before = h.lead().await.lead;
        h.advance_hours(1).await;
        assert_eq!(
            h.pending_approvals().await.len(),
            1,
            "default policy: review even pre-approved templates"
        );
        assert!(h.messages(before.id).await.is_empty());

        h.settings(json!({"preapproved_skip_review": true})).await;
        let after = h.lead().await.lead;
        h.advance_hours(1).await;
        assert_eq!(
            h.messages(after.id).await.len(),
            1,
            "policy on: a pre-approved template goes straight out"
        );
        assert_eq!(h.pending_approvals().await.len(), 1);
    }
);

behaviour_test!(
    a_template_not_pre_approved_is_reviewed_even_when_policy_allows,
    |h| async move {
        h.settings(json!({"preapproved_skip_review": true})).await;
        h.template("plain", "Hello", "Hi", false).await;
        h.sequence(
            "Reviewed",
            vec![reviewed_email(1, 0, "plain")],
            Some(json!({})),
            None,
        )
        .await;
        let lead = h.lead().await.lead;
        h.advance_hours(1).await;
        assert_eq!(h.pending_approvals().await.len(), 1);
        assert!(h.messages(lead.id).await.is_empty());
    }
);

behaviour_test!(an_agent_draft_always_needs_a_human, |h| async move {
    h.settings(json!({"preapproved_skip_review": true})).await;
    h.template("pre", "Hello", "Hi", false).await;
    h.sequence(
        "Reviewed",
        vec![reviewed_email(1, 0, "pre")],
        Some(json!({})),
        None,
    )
    .await;
    let lead = h.lead().await.lead;
    h.advance_hours(1).await;
    let a = h.pending_approvals().await.remove(0);
    let draft = ApprovalEdit {
        subject: Some("AI subject".into()),
        body: Some("AI body".into()),
        html_body: None,
    };
    let d = h.engine.draft_approval(h.p, a.id, draft).await.unwrap();
    assert_eq!(
        (d.author, d.status),
        (ApprovalAuthor::Agent, ApprovalStatus::Pending)
    );
    h.advance_days(2).await;
    assert!(h.messages(lead.id).await.is_empty());
    h.engine
        .approve(h.p, a.id, ApprovalEdit::default())
        .await
        .unwrap();
    assert_eq!(h.messages(lead.id).await[0].body, "AI body");
});

behaviour_test!(
    an_approved_message_held_by_the_cap_is_sent_as_approved_later,
    |h| async move {
        h.template("a", "Hello", "Hi", false).await;
        h.sequence(
            "Reviewed",
            vec![reviewed_email(1, 0, "a")],
            Some(json!({})),
            None,
        )
        .await;
        let lead = h.lead().await.lead;
        h.advance_hours(1).await;
        h.event(
            lead.id,
            LeadEvent::OutboundMessage {
                subject: Some("sales call recap".into()),
            },
        )
        .await;
        let a = h.pending_approvals().await.remove(0);
        h.engine
            .approve(
                h.p,
                a.id,
                ApprovalEdit {
                    body: Some("Approved text".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let e = h.only_enrollment(lead.id).await;
        assert_eq!(e.status, EnrollmentStatus::Active);
        assert_eq!(e.next_step_on, Some(h.at(1 + 48)), "deferred by the cap");
        assert_eq!(
            h.messages(lead.id).await.len(),
            1,
            "only the external message so far"
        );
        h.advance_days(3).await;
        let msgs = h.messages(lead.id).await;
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1].body, "Approved text");
        assert_eq!(msgs[1].created_at, h.at(49));
        assert!(h.pending_approvals().await.is_empty(), "no second review");
        assert_eq!(
            h.only_enrollment(lead.id).await.status,
            EnrollmentStatus::Completed
        );
    }
);

behaviour_test!(exiting_cancels_a_pending_approval, |h| async move {
    h.template("a", "Hello", "Hi", false).await;
    h.sequence(
        "Reviewed",
        vec![reviewed_email(1, 0, "a")],
        Some(json!({})),
        None,
    )
    .await;
    let lead = h.lead().await.lead;
    h.advance_hours(1).await;
    let a = h.pending_approvals().await.remove(0);
    h.event(lead.id, LeadEvent::Converted).await;
    assert!(h.pending_approvals().await.is_empty());
    assert_eq!(
        h.engine.get_approval(h.p, a.id).await.unwrap().status,
        ApprovalStatus::Cancelled
    );
    assert!(matches!(
        h.engine
            .approve(h.p, a.id, ApprovalEdit::default())
            .await
            .unwrap_err(),
        Error::Conflict { .. }
    ));
});
