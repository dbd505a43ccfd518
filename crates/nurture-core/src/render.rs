//! Message templates, rendered with minijinja and strict about undefined variables
//! (issue #2, item 5): a template that names a field the lead does not have is refused when the
//! sequence is activated, and a lead whose value is missing (null) at send time gets no message
//! rather than one with a blank.

use std::collections::{BTreeMap, HashSet};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::domain::Template;
use crate::domain::{Lead, TemplateId, TenantId};
use crate::error::FieldError;

/// The names a template may use: the lead's own fields (SPEC section 2, `leads`).
pub const LEAD_FIELDS: &[&str] = &[
    "id",
    "email",
    "first_name",
    "last_name",
    "company",
    "timezone",
    "status",
    "score",
    "score_band",
    "segments",
    "attributes",
    "owner_id",
];

/// A bound on template work per render, so a pathological template cannot stall a batch.
const FUEL: u64 = 50_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
    pub html_body: Option<String>,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env
}

/// Checks that subject, body and HTML body compile, and name only lead fields. Errors are at
/// `subject`, `body`, `html_body`.
pub fn check_template(subject: &str, body: &str, html_body: Option<&str>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let env = environment();
    let parts = [
        ("subject", Some(subject)),
        ("body", Some(body)),
        ("html_body", html_body),
    ];
    for (path, source) in parts {
        let Some(source) = source else { continue };
        match env.template_from_str(source) {
            Err(e) => errors.push(FieldError::new(path, format!("template syntax error: {e}"))),
            Ok(t) => {
                let mut unknown: Vec<String> = t
                    .undeclared_variables(false)
                    .into_iter()
                    .filter(|v| !LEAD_FIELDS.contains(&v.as_str()))
                    .collect();
                unknown.sort();
                for name in unknown {
                    errors.push(FieldError::new(
                        path,
                        format!(
                            "unknown variable {name:?}; a template may use the lead's fields: {}",
                            LEAD_FIELDS.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    errors
}

/// Compiles each template once and renders it for many leads (a scheduler batch).
pub struct Renderer {
    env: Environment<'static>,
    loaded: HashSet<(TenantId, TemplateId)>,
}

impl Default for Renderer {
    fn default() -> Self {
        Renderer {
            env: environment(),
            loaded: HashSet::new(),
        }
    }
}

impl Renderer {
    fn name(t: &Template, part: &str) -> String {
        format!("{}/{}/{part}", t.tenant_id, t.id)
    }

    pub fn render(&mut self, template: &Template, lead: &Lead) -> Result<Rendered, String> {
        let key = (template.tenant_id, template.id.clone());
        if !self.loaded.contains(&key) {
            self.env
                .add_template_owned(Self::name(template, "subject"), template.subject.clone())
                .map_err(|e| e.to_string())?;
            self.env
                .add_template_owned(Self::name(template, "body"), template.body.clone())
                .map_err(|e| e.to_string())?;
            if let Some(html) = &template.html_body {
                self.env
                    .add_template_owned(Self::name(template, "body.html"), html.clone())
                    .map_err(|e| e.to_string())?;
            }
            self.loaded.insert(key);
        }
        let ctx = lead_context(lead);
        let part = |env: &Environment<'static>, part: &str| -> Result<String, String> {
            env.get_template(&Self::name(template, part))
                .and_then(|t| t.render(ctx.clone()))
                .map_err(|e| format!("{part}: {e}"))
        };
        Ok(Rendered {
            subject: part(&self.env, "subject")?,
            body: part(&self.env, "body")?,
            html_body: match template.html_body {
                Some(_) => Some(part(&self.env, "body.html")?),
                None => None,
            },
        })
    }
}

/// The lead as template variables. Null fields are left out, so strict mode refuses a template
/// that would print them as blanks.
pub fn lead_context(lead: &Lead) -> Value {
    let mut m: BTreeMap<&'static str, Value> = BTreeMap::new();
    m.insert("id", Value::from(lead.id.to_string()));
    m.insert("email", Value::from(lead.email.as_str()));
    let mut opt = |k: &'static str, v: &Option<String>| {
        if let Some(v) = v {
            m.insert(k, Value::from(v.as_str()));
        }
    };
    opt("first_name", &lead.first_name);
    opt("last_name", &lead.last_name);
    opt("company", &lead.company);
    opt("score_band", &lead.score_band);
    if let Some(tz) = &lead.timezone {
        m.insert("timezone", Value::from(tz.as_str()));
    }
    if let Some(owner) = lead.owner_id {
        m.insert("owner_id", Value::from(owner.to_string()));
    }
    m.insert("status", Value::from(lead.status.as_str()));
    m.insert("score", Value::from(lead.score));
    m.insert(
        "segments",
        Value::from(minijinja::value::Serde(&lead.segments)),
    );
    m.insert(
        "attributes",
        Value::from(minijinja::value::Serde(&lead.attributes)),
    );
    Value::from(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;

    fn template(subject: &str, body: &str) -> Template {
        let now = jiff::Timestamp::UNIX_EPOCH;
        Template {
            tenant_id: uuid::Uuid::nil(),
            id: TemplateId::parse("t").unwrap(),
            name: "t".into(),
            subject: subject.into(),
            body: body.into(),
            html_body: Some("<p>{{ company }}</p>".into()),
            pre_approved: false,
            created_at: now,
            updated_at: now,
        }
    }

    pub(crate) fn lead() -> Lead {
        let now = jiff::Timestamp::UNIX_EPOCH;
        Lead {
            id: uuid::Uuid::nil(),
            first_name: Some("Ada".into()),
            company: Some("<Acme & Co>".into()),
            status: LeadStatus::Qualified,
            score: 60,
            score_band: Some("warm".into()),
            segments: vec!["smb".into()],
            attributes: serde_json::json!({"plan": {"tier": "pro"}})
                .as_object()
                .unwrap()
                .clone(),
            ..Lead::new(
                uuid::Uuid::nil(),
                EmailAddress::parse("ada@example.com").unwrap(),
                now,
            )
        }
    }

    #[test]
    fn renders_lead_fields_and_escapes_only_html() {
        let mut r = Renderer::default();
        let t = template(
            "Hi {{ first_name }}",
            "{{ company }} on {{ attributes.plan.tier }}",
        );
        let out = r.render(&t, &lead()).unwrap();
        assert_eq!(out.subject, "Hi Ada");
        assert_eq!(out.body, "<Acme & Co> on pro");
        assert_eq!(
            out.html_body.as_deref(),
            Some("<p>&lt;Acme &amp; Co&gt;</p>")
        );
    }

    #[test]
    fn a_null_field_is_refused_not_blank() {
        let mut r = Renderer::default();
        let t = template("Hi {{ last_name }}", "x");
        let err = r.render(&t, &lead()).unwrap_err();
        assert!(
            err.contains("subject") && err.contains("undefined"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_attribute_is_refused() {
        let mut r = Renderer::default();
        let t = template("Hi", "{{ attributes.nope }}");
        assert!(r.render(&t, &lead()).is_err());
    }

    #[test]
    fn check_template_names_unknown_variables_and_syntax_errors() {
        let errs = check_template("Hi {{ nickname }}", "{% if %}", None);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].path, "subject");
        assert!(errs[0].message.contains("nickname"));
        assert_eq!(errs[1].path, "body");
        assert!(errs[1].message.contains("syntax"));
        assert!(check_template("Hi {{ first_name }}", "{{ attributes.x }}", None).is_empty());
    }
}
