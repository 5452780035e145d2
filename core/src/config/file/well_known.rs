//! `/.well-known/matrix/{server,client,support}` bodies: derived from `public_url` and
//! `identity_server`, extended by `[well_known.client_extra]`, or given outright
//! (`[well_known] server = '<json>'` or a table), and pre-rendered as compact JSON.

use bytes::Bytes;
use serde_json::{Map, Value as Json};

use super::values::{parse_authority, parse_url};
use super::walk::{Fields, Node, Scalar, Shape, Source};
use super::ConfigError;
use crate::config::WellKnown;

const WELL_KNOWN_KEYS: &[&str] = &["server", "client", "support", "client_extra"];
const SUPPORT_KEYS: &[&str] = &["contacts", "support_page"];
const CONTACT_KEYS: &[&str] = &["role", "matrix_id", "email_address"];

const URL_EXAMPLE: &str = "a URL like \"https://matrix.example.com\"";

/// What a `[well_known]` entry says.
enum Override {
    /// `false`: answer 404.
    Disabled,
    /// `true`: the derived body (as if absent).
    Derived,
    Body(Map<String, Json>),
}

/// Builds the well-known bodies from the top-level table.
pub(super) fn build(src: &Source<'_>, top: &Fields<'_>) -> Result<WellKnown, ConfigError> {
    let public_url = match top.get("public_url") {
        None => None,
        Some(node) => {
            let s = node.string(src, URL_EXAMPLE)?;
            let url = parse_url(s).map_err(|m| node.error(src, m))?;
            Some((node, url, s.trim_end_matches('/')))
        }
    };
    let table = top
        .get("well_known")
        .map(|n| n.table(src, WELL_KNOWN_KEYS))
        .transpose()?;
    let entry = |key: &str| table.as_ref().and_then(|t| t.get(key));

    // m.server: where federation traffic for server_name goes.
    let derived_server = public_url.as_ref().map(|(_, url, _)| {
        let host = format!("{}:{}", url.authority.url_host(), url.port_or_default());
        object([("m.server", Json::String(host))])
    });
    let server = match entry("server") {
        None => derived_server,
        Some(node) => {
            let body = resolve(src, node, Some(&["m.server"]), derived_server)?;
            if let Some(body) = &body {
                check_server(body).map_err(|m| node.error(src, m))?;
            }
            body
        }
    };

    // m.homeserver (and m.identity_server, and extras): where clients go.
    let derived_client = public_url.as_ref().map(|(_, _, base)| {
        object([("m.homeserver", object_value([("base_url", (*base).into())]))])
    });
    let client_node = entry("client");
    let mut client = match client_node {
        None => derived_client,
        Some(node) => resolve(src, node, None, derived_client)?,
    };
    if let Some(node) = top.get("identity_server") {
        let s = node.string(src, "a URL like \"https://vector.im\"")?;
        parse_url(s).map_err(|m| node.error(src, m))?;
        let body = client.as_mut().ok_or_else(|| no_client_body(src, node))?;
        body.insert(
            "m.identity_server".into(),
            object_value([("base_url", s.trim_end_matches('/').into())]),
        );
    }
    if let Some(node) = entry("client_extra") {
        let entries = node
            .entries()
            .ok_or_else(|| node.expected(src, "a table of extra keys"))?;
        let body = client.as_mut().ok_or_else(|| no_client_body(src, node))?;
        for (key, _, value) in entries {
            body.insert(key.to_string(), to_json(src, &value)?);
        }
    }
    if let Some(body) = &client {
        if let Err(m) = check_client(body) {
            let at = entry("client_extra")
                .or(client_node)
                .or(public_url.as_ref().map(|(n, _, _)| *n));
            return Err(match at {
                Some(node) => node.error(src, m),
                None => src.error(&Some(0..0), "well_known.client", m),
            });
        }
    }

    // MSC1929 support contacts.
    let support = match entry("support") {
        None => None,
        Some(node) => {
            if node.is_table() {
                check_support_table(src, node)?;
            }
            let body = resolve(src, node, Some(SUPPORT_KEYS), None)?;
            if let Some(body) = &body {
                check_support(body).map_err(|m| node.error(src, m))?;
            }
            body
        }
    };

    Ok(WellKnown {
        server: server.map(render),
        client: client.map(render),
        support: support.map(render),
    })
}

fn no_client_body(src: &Source<'_>, node: &Node<'_>) -> ConfigError {
    node.error(
        src,
        "there is no client well-known body to add this to: set public_url (or well_known.client)",
    )
}

/// Compact JSON.
fn render(body: Map<String, Json>) -> Bytes {
    Bytes::from(Json::Object(body).to_string())
}

fn object<const N: usize>(entries: [(&str, Json); N]) -> Map<String, Json> {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn object_value<const N: usize>(entries: [(&str, Json); N]) -> Json {
    Json::Object(object(entries))
}

/// Reads `false` / `true` / `'<json object>'` / a table.
fn resolve(
    src: &Source<'_>,
    node: &Node<'_>,
    table_keys: Option<&'static [&'static str]>,
    derived: Option<Map<String, Json>>,
) -> Result<Option<Map<String, Json>>, ConfigError> {
    let what = "a JSON object in a string, a table, or `false`";
    let parsed = match node.scalar() {
        Some(Scalar::Bool(false)) => Override::Disabled,
        Some(Scalar::Bool(true)) => Override::Derived,
        Some(Scalar::Str(s)) => match serde_json::from_str::<Json>(s) {
            Ok(Json::Object(map)) => Override::Body(map),
            Ok(_) => return Err(node.error(src, format!("expected {what}, found other JSON"))),
            Err(e) => return Err(node.error(src, format!("invalid JSON: {e}"))),
        },
        Some(_) => return Err(node.expected(src, what)),
        None if node.is_table() => {
            if let Some(keys) = table_keys {
                node.table(src, keys)?;
            }
            match to_json(src, node)? {
                Json::Object(map) => Override::Body(map),
                _ => return Err(node.expected(src, what)),
            }
        }
        None => return Err(node.expected(src, what)),
    };
    match parsed {
        Override::Disabled => Ok(None),
        Override::Body(map) => Ok(Some(map)),
        Override::Derived => match derived {
            Some(body) => Ok(Some(body)),
            None => Err(node.error(
                src,
                "`true` means the derived body, but there is nothing to derive it from (set public_url, or give the body)",
            )),
        },
    }
}

/// A TOML value as JSON (tables become objects).
pub(super) fn to_json(src: &Source<'_>, node: &Node<'_>) -> Result<Json, ConfigError> {
    Ok(match node.shape() {
        Shape::Scalar(Scalar::Str(s)) => Json::String(s.to_string()),
        Shape::Scalar(Scalar::Int(i)) => Json::from(i),
        Shape::Scalar(Scalar::Bool(b)) => Json::Bool(b),
        Shape::Scalar(Scalar::Float(f)) => serde_json::Number::from_f64(f)
            .map(Json::Number)
            .ok_or_else(|| node.error(src, "JSON has no infinity or NaN"))?,
        Shape::Scalar(Scalar::Datetime) => {
            return Err(node.error(src, "JSON has no date-times; write it as a string"))
        }
        Shape::Array(elements) => Json::Array(
            elements
                .iter()
                .map(|e| to_json(src, e))
                .collect::<Result<_, _>>()?,
        ),
        Shape::Table(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| Ok((k.to_string(), to_json(src, v)?)))
                .collect::<Result<_, ConfigError>>()?,
        ),
    })
}

fn check_server(body: &Map<String, Json>) -> Result<(), String> {
    let expected = "expected \"m.server\" to be a host and port like \"matrix.example.com:443\"";
    match body.get("m.server") {
        Some(Json::String(s)) => parse_authority(s)
            .map(|_| ())
            .map_err(|m| format!("{expected}: {m}")),
        _ => Err(expected.into()),
    }
}

fn check_client(body: &Map<String, Json>) -> Result<(), String> {
    let base_url = body
        .get("m.homeserver")
        .and_then(|h| h.get("base_url"))
        .and_then(Json::as_str)
        .ok_or("expected \"m.homeserver\": {\"base_url\": \"https://…\"} in the client body")?;
    parse_url(base_url).map_err(|m| format!("m.homeserver base_url: {m}"))?;
    if let Some(identity) = body.get("m.identity_server") {
        let base_url = identity
            .get("base_url")
            .and_then(Json::as_str)
            .ok_or("expected \"m.identity_server\": {\"base_url\": \"https://…\"}")?;
        parse_url(base_url).map_err(|m| format!("m.identity_server base_url: {m}"))?;
    }
    Ok(())
}

/// Key checks for the table form, with locations (the JSON check below gives none).
fn check_support_table(src: &Source<'_>, node: &Node<'_>) -> Result<(), ConfigError> {
    let fields = node.table(src, SUPPORT_KEYS)?;
    if let Some(contacts) = fields.get("contacts") {
        for contact in contacts.array(src, "an array of contacts")? {
            let c = contact.table(src, CONTACT_KEYS)?;
            c.require(src, "role", "a role like \"m.role.admin\"")?
                .string(src, "a role like \"m.role.admin\"")?;
            if let Some(id) = c.get("matrix_id") {
                let s = id.string(src, "a Matrix user id like \"@admin:example.com\"")?;
                check_matrix_id(s).map_err(|m| id.error(src, m))?;
            }
            if let Some(email) = c.get("email_address") {
                email.string(src, "an email address")?;
            }
            if c.get("matrix_id").is_none() && c.get("email_address").is_none() {
                return Err(contact.error(src, "a contact needs a matrix_id or an email_address"));
            }
        }
    }
    if let Some(page) = fields.get("support_page") {
        let s = page.string(src, URL_EXAMPLE)?;
        parse_url(s).map_err(|m| page.error(src, m))?;
    }
    Ok(())
}

fn check_matrix_id(s: &str) -> Result<(), String> {
    match s.strip_prefix('@').and_then(|r| r.split_once(':')) {
        Some((local, server)) if !local.is_empty() && !server.is_empty() => Ok(()),
        _ => Err(format!(
            "`{s}` is not a Matrix user id like \"@admin:example.com\""
        )),
    }
}

fn check_support(body: &Map<String, Json>) -> Result<(), String> {
    let contacts = body.get("contacts");
    let page = body.get("support_page");
    if contacts.is_none() && page.is_none() {
        return Err("a support body needs contacts or a support_page (MSC1929)".into());
    }
    if let Some(page) = page {
        let page = page.as_str().ok_or("support_page must be a URL string")?;
        parse_url(page).map_err(|m| format!("support_page: {m}"))?;
    }
    if let Some(contacts) = contacts {
        let contacts = contacts.as_array().ok_or("contacts must be an array")?;
        for (i, contact) in contacts.iter().enumerate() {
            let has = |k: &str| contact.get(k).is_some_and(Json::is_string);
            if !has("role") {
                return Err(format!("contacts[{i}] needs a role like \"m.role.admin\""));
            }
            if !has("matrix_id") && !has("email_address") {
                return Err(format!(
                    "contacts[{i}] needs a matrix_id or an email_address"
                ));
            }
            if let Some(id) = contact.get("matrix_id").and_then(Json::as_str) {
                check_matrix_id(id).map_err(|m| format!("contacts[{i}]: {m}"))?;
            }
        }
    }
    Ok(())
}
