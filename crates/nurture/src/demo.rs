//! `nurture demo`: a demo tenant with realistic leads, templates and sequences, and a simulated
//! month on the manual clock, ending at the present so `--serve` carries on from it. The leads
//! behave like leads: some reply, some convert, some unsubscribe; reviewers approve most drafts
//! and reps complete most tasks.

use std::collections::BTreeMap;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use jiff::{SignedDuration, Timestamp};
use nurture_core::clock::ManualClock;
use nurture_core::domain::*;
use nurture_core::engine::*;
use nurture_core::rules::{EntryRules, ExitRules};
use nurture_core::store::{EnrollmentFilter, Page, Store};
use nurture_core::{Engine, Principal};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;

use crate::cli::DemoArgs;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub tenant_id: uuid::Uuid,
    pub api_key: String,
    pub simulated_days: u32,
    pub leads: u32,
    pub enrolled: usize,
    pub active: usize,
    pub completed: usize,
    pub messages: usize,
    pub approvals_waiting: usize,
    pub tasks_open: usize,
    pub tasks_done: usize,
    pub exits_by_reason: BTreeMap<String, usize>,
}

const FIRST: &[&str] = &[
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Margaret",
    "Radia",
    "Linus",
    "Katherine",
    "Dennis",
    "Hedy",
    "John",
    "Sophie",
];
const LAST: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton",
    "Perlman", "Torvalds", "Johnson", "Ritchie", "Lamarr", "Backus", "Wilson",
];
const COMPANIES: &[&str] = &[
    "Acme Analytics",
    "Globex",
    "Initech",
    "Umbrella Health",
    "Stark Logistics",
    "Wayne Foods",
    "Hooli",
    "Vandelay Imports",
    "Soylent Labs",
    "Tyrell Systems",
];
const ZONES: &[&str] = &[
    "Europe/Paris",
    "America/New_York",
    "America/Los_Angeles",
    "Europe/London",
    "Asia/Tokyo",
    "Australia/Sydney",
    "UTC",
];

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

pub async fn run(store: Arc<dyn Store>, args: &DemoArgs) -> anyhow::Result<Summary> {
    let end = Timestamp::now();
    let start = end - SignedDuration::from_hours(args.days as i64 * 24);
    let clock = Arc::new(ManualClock::new(start));
    let engine =
        Engine::with_manual_clock(store, clock.clone()).with_key_pepper(&crate::key_pepper());
    let (tenant, api_key) = engine.create_tenant("Demo Co").await?;
    let p = engine
        .authenticate(&api_key)
        .await?
        .expect("a fresh key authenticates");
    let mut rng = StdRng::seed_from_u64(args.seed);

    engine
        .patch_settings(p, &json!({
            "from_email": "hello@demo.example", "from_name": "Demo Co",
            "postal_address": "1 Demo Street, Springfield", "preapproved_skip_review": true,
            "sending_window": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"}
        }))
        .await?;
    templates(&engine, p).await?;
    sequences(&engine, p).await?;

    let owners: Vec<uuid::Uuid> = (0..4).map(|_| new_id()).collect();
    let mut leads = Vec::new();
    let initial = args.leads * 2 / 3;
    for _ in 0..initial {
        leads.push(new_lead(&engine, p, &mut rng, &owners).await?);
    }

    let bar = ProgressBar::new(args.days as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] day {pos}/{len}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message("simulating");
    let arriving_per_day = ((args.leads - initial) / args.days).max(1);
    let mut created = initial;
    for _day in 0..args.days {
        for _ in 0..arriving_per_day {
            if created < args.leads {
                leads.push(new_lead(&engine, p, &mut rng, &owners).await?);
                created += 1;
            }
        }
        // A working day: reviewers decide, reps finish tasks, leads react to what they got.
        for a in engine
            .list_approvals(p, Some(ApprovalStatus::Pending), &Page::first(1000))
            .await?
            .items
        {
            match rng.random_range(0..10) {
                0 => drop(
                    engine
                        .reject(p, a.id, Some("not the right tone".into()), false)
                        .await?,
                ),
                1..=7 => drop(engine.approve(p, a.id, ApprovalEdit::default()).await?),
                _ => {}
            }
        }
        for t in engine
            .list_tasks(p, Some(TaskStatus::Open), &Page::first(1000))
            .await?
            .items
        {
            if rng.random_bool(0.6) {
                engine.complete_task(p, t.id).await?;
            }
        }
        for lead in &leads {
            let roll = rng.random_range(0..1000);
            let event = match roll {
                0..=7 => Some(LeadEvent::Reply {
                    sentiment: Sentiment::Positive,
                    until: None,
                }),
                8..=17 => Some(LeadEvent::Reply {
                    sentiment: Sentiment::Neutral,
                    until: None,
                }),
                18..=21 => Some(LeadEvent::Reply {
                    sentiment: Sentiment::OutOfOffice,
                    until: Some(clock_now(&engine) + SignedDuration::from_hours(72)),
                }),
                22..=25 => Some(LeadEvent::Converted),
                26..=27 => Some(LeadEvent::Unsubscribed),
                28 => Some(LeadEvent::Bounced { hard: true }),
                29..=60 => Some(LeadEvent::EmailOpened),
                _ => None,
            };
            if let Some(event) = event {
                engine.lead_event(p, *lead, event, None).await?;
            }
        }
        let next = clock_now(&engine) + SignedDuration::from_hours(24);
        engine.advance_to(next.min(end)).await?;
        bar.inc(1);
    }
    bar.finish_with_message("done");
    clock.set(end);
    summarize(&engine, p, tenant.id, api_key, args).await
}

fn clock_now(engine: &Engine) -> Timestamp {
    engine.now()
}

async fn new_lead(
    engine: &Engine,
    p: Principal,
    rng: &mut StdRng,
    owners: &[uuid::Uuid],
) -> anyhow::Result<LeadId> {
    let first = pick(rng, FIRST);
    let last = pick(rng, LAST);
    let company = pick(rng, COMPANIES);
    let n: u32 = rng.random_range(0..1_000_000);
    let status = match rng.random_range(0..10) {
        0..=3 => LeadStatus::New,
        4..=6 => LeadStatus::Contacted,
        7..=8 => LeadStatus::Qualified,
        _ => LeadStatus::Disqualified,
    };
    let band = match rng.random_range(0..10) {
        0..=3 => "cold",
        4..=8 => "warm",
        _ => "hot",
    };
    let segment = if rng.random_bool(0.3) {
        "enterprise"
    } else {
        "smb"
    };
    let input = LeadInput {
        id: None,
        email: EmailAddress::parse(&format!(
            "{}.{}.{n}@{}.example",
            first.to_lowercase(),
            last.to_lowercase(),
            company.split(' ').next().unwrap_or("x").to_lowercase()
        ))?,
        first_name: Some(first.into()),
        last_name: Some(last.into()),
        company: Some(company.into()),
        timezone: Some(TimeZoneName::parse(pick(rng, ZONES))?),
        status,
        score: rng.random_range(10..100),
        score_band: Some(band.into()),
        segments: vec![segment.into()],
        attributes: json!({"source": if rng.random_bool(0.5) { "webinar" } else { "website" }})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        owner_id: Some(owners[rng.random_range(0..owners.len())]),
        do_not_contact: rng.random_bool(0.02),
        unsubscribed: false,
    };
    Ok(engine.upsert_lead(p, input).await?.lead.id)
}

async fn templates(engine: &Engine, p: Principal) -> anyhow::Result<()> {
    let all = [
        (
            "welcome",
            "Welcome, {{ first_name }}",
            "Hi {{ first_name }},\n\nThanks for your interest. Here is how teams like {{ company }} get started.",
            false,
        ),
        (
            "case-study",
            "How a team like {{ company }} saved 10 hours a week",
            "Hi {{ first_name }},\n\nA short case study you might like.",
            false,
        ),
        (
            "check-in",
            "Quick check-in",
            "Hi {{ first_name }}, is now a good time to talk?",
            true,
        ),
        (
            "break-up",
            "Should I close your file?",
            "Hi {{ first_name }},\n\nI have not heard back, so this is my last note for now.",
            true,
        ),
        (
            "call-brief",
            "Call {{ first_name }} {{ last_name }} at {{ company }}",
            "Call brief.",
            false,
        ),
    ];
    for (id, subject, body, pre_approved) in all {
        let input = TemplateInput {
            id: TemplateId::parse(id)?,
            name: id.replace('-', " "),
            subject: subject.into(),
            body: body.into(),
            html_body: None,
            pre_approved,
        };
        engine.put_template(p, input, false).await?;
    }
    Ok(())
}

fn step(
    order: i64,
    channel: Channel,
    delay: i64,
    template: Option<&str>,
    approval: bool,
) -> anyhow::Result<Step> {
    Ok(Step {
        step_order: StepOrder::parse(order)?,
        channel,
        delay_hours: DelayHours::parse(delay)?,
        template_id: template.map(TemplateId::parse).transpose()?,
        requires_human_approval: approval,
        conditions: None,
    })
}

async fn sequences(engine: &Engine, p: Principal) -> anyhow::Result<()> {
    let rules = |v: serde_json::Value| {
        EntryRules::parse(&v, "entry_rules").map_err(|e| anyhow::anyhow!("{e:?}"))
    };
    let exits = |v: serde_json::Value| {
        ExitRules::parse(&v, "exit_rules").map_err(|e| anyhow::anyhow!("{e:?}"))
    };
    let all = [
        SequenceInput {
            name: "Warm inbound".into(),
            priority: 10,
            entry_rules: Some(rules(json!({"segments_any": ["smb"]}))?),
            exit_rules: exits(json!({"inactivity_days": 18}))?,
            steps: vec![
                step(1, Channel::Email, 0, Some("welcome"), false)?,
                step(2, Channel::Email, 72, Some("case-study"), true)?,
                step(3, Channel::CallReminder, 48, Some("call-brief"), false)?,
                step(4, Channel::Email, 96, Some("check-in"), true)?,
                step(5, Channel::Email, 120, Some("break-up"), false)?,
            ],
        },
        SequenceInput {
            name: "Enterprise hand-raisers".into(),
            priority: 5,
            entry_rules: Some(rules(
                json!({"segments_any": ["enterprise"], "score_bands": ["warm", "hot"], "min_score": 40}),
            )?),
            exit_rules: exits(json!({"on_reply": "any"}))?,
            steps: vec![
                step(1, Channel::Task, 0, None, false)?,
                step(2, Channel::Email, 24, Some("case-study"), true)?,
                step(3, Channel::Wait, 72, None, false)?,
                step(4, Channel::Email, 48, Some("check-in"), false)?,
            ],
        },
        SequenceInput {
            name: "Manual follow-up".into(),
            priority: 0,
            entry_rules: None,
            exit_rules: ExitRules::default(),
            steps: vec![step(1, Channel::Email, 0, Some("check-in"), false)?],
        },
    ];
    for input in all {
        let s = engine.create_sequence(p, input).await?;
        engine.activate_sequence(p, s.id).await?;
    }
    Ok(())
}

async fn summarize(
    engine: &Engine,
    p: Principal,
    tenant_id: uuid::Uuid,
    api_key: String,
    args: &DemoArgs,
) -> anyhow::Result<Summary> {
    let mut enrollments = Vec::new();
    let mut page = Page::first(1000);
    loop {
        let listed = engine
            .list_enrollments(p, &EnrollmentFilter::default(), &page)
            .await?;
        enrollments.extend(listed.items);
        match listed.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    let mut exits_by_reason = BTreeMap::new();
    for e in enrollments
        .iter()
        .filter(|e| e.status == EnrollmentStatus::Exited)
    {
        *exits_by_reason
            .entry(e.exit_reason.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let count = |status| enrollments.iter().filter(|e| e.status == status).count();
    let messages =
        count_all(
            |page| async move { Ok(engine.list_messages(p, &Default::default(), &page).await?) },
        )
        .await?;
    let approvals_waiting = count_all(|page| async move {
        Ok(engine
            .list_approvals(p, Some(ApprovalStatus::Pending), &page)
            .await?)
    })
    .await?;
    let tasks_open =
        count_all(
            |page| async move { Ok(engine.list_tasks(p, Some(TaskStatus::Open), &page).await?) },
        )
        .await?;
    let tasks_done =
        count_all(
            |page| async move { Ok(engine.list_tasks(p, Some(TaskStatus::Done), &page).await?) },
        )
        .await?;
    Ok(Summary {
        tenant_id,
        api_key,
        simulated_days: args.days,
        leads: args.leads,
        enrolled: enrollments.len(),
        active: count(EnrollmentStatus::Active) + count(EnrollmentStatus::Paused),
        completed: count(EnrollmentStatus::Completed),
        messages,
        approvals_waiting,
        tasks_open,
        tasks_done,
        exits_by_reason,
    })
}

async fn count_all<T, F, Fut>(mut list: F) -> anyhow::Result<usize>
where
    F: FnMut(Page) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<nurture_core::store::Listed<T>>>,
{
    let mut page = Page::first(1000);
    let mut n = 0;
    loop {
        let listed = list(page.clone()).await?;
        n += listed.items.len();
        match listed.next {
            Some(next) => page.after = Some(next),
            None => return Ok(n),
        }
    }
}
