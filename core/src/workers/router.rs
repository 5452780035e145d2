//! Which worker role a request goes to: the endpoint table compiled, once, for the roles
//! that have pools.
//!
//! ## Why it is fast
//! Every pattern starts with literal bytes (`^/_matrix/client/`), and its leading groups
//! expand to a few literal prefixes (`/_matrix/client/v3/rooms/`, …). At build time those
//! prefixes go into a byte trie, and the patterns hanging on each trie node are compiled
//! together into one DFA ([`PatternSet`]) that starts after that node's prefix. A request
//! walks the trie along its path — at most the longest prefix (~60 bytes), no allocation —
//! and at the few nodes that carry patterns, reads the rest of the path once through that
//! node's DFA, one table lookup per byte, stopping as soon as the best match is decided.
//! A path outside `/_matrix` and `/_synapse` leaves the trie within a few bytes. Measured
//! on the full table (release build): ~140 ns for typical paths, ~15–40 µs for an 8 KiB
//! path built to keep every `.*` pattern undecided. Patterns whose role has no pool are
//! never compiled; building the full table takes ~15 ms, once, at configuration time.

use thiserror::Error;

use super::hash::{self, KeyKind};
use super::pattern::{Pattern, PatternError, PatternSet, MAX_SET};
use super::table::{RoleSet, WorkerRole, ENDPOINTS};

/// Where the router sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    /// [`WorkerRole::Main`] when no configured worker claims the request.
    pub role: WorkerRole,
    /// The key the request must stick by (see [`super::balance::effective_policy`]).
    pub sticky: Option<KeyKind>,
}

impl RouteMatch {
    pub const MAIN: RouteMatch = RouteMatch {
        role: WorkerRole::Main,
        sticky: None,
    };
}

/// An extra route from the configuration, tried before the built-in table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomRoute {
    /// In the [`super::pattern`] subset, starting with `^`.
    pub pattern: String,
    pub role: WorkerRole,
    pub get_only: bool,
    pub sticky: Option<KeyKind>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RouterError {
    #[error("worker route {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        source: PatternError,
    },
    #[error("worker route {pattern:?} names {role}, which has no pool")]
    NoPool { pattern: String, role: WorkerRole },
}

#[derive(Debug, Clone)]
struct Compiled {
    pattern: Pattern,
    /// The role for this line (after fallbacks); `None` when only `initial` applies.
    role: Option<WorkerRole>,
    /// For `/sync`: the role for initial syncs.
    initial: Option<WorkerRole>,
    get_only: bool,
    sticky: Option<KeyKind>,
}

/// Patterns hanging on one trie node, matched together.
#[derive(Debug, Clone)]
struct Group {
    /// Indices into `Router::routes`, ascending; member `i` of `set` is `routes[i]`.
    routes: Vec<u32>,
    set: PatternSet,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Sorted by byte.
    edges: Vec<(u8, u32)>,
    /// The patterns whose literal prefix ends here, in groups of ascending route indices.
    groups: Vec<Group>,
}

/// The compiled table. Build it with the configuration; share it (`Arc`) read-only.
#[derive(Debug, Clone)]
pub struct Router {
    roles: RoleSet,
    routes: Vec<Compiled>,
    trie: Vec<Node>,
}

impl Router {
    /// The built-in table, for the roles in `roles` (those with a pool).
    pub fn new(roles: RoleSet) -> Router {
        match Router::with_custom(roles, &[]) {
            Ok(router) => router,
            // The built-in table compiles (tested); nothing here depends on input.
            Err(e) => unreachable!("built-in worker table: {e}"),
        }
    }

    /// The built-in table with `custom` routes tried first, in their order.
    pub fn with_custom(roles: RoleSet, custom: &[CustomRoute]) -> Result<Router, RouterError> {
        let mut routes = Vec::new();
        for c in custom {
            if !roles.contains(c.role) {
                return Err(RouterError::NoPool {
                    pattern: c.pattern.clone(),
                    role: c.role,
                });
            }
            let pattern = Pattern::compile(&c.pattern).map_err(|source| RouterError::Pattern {
                pattern: c.pattern.clone(),
                source,
            })?;
            routes.push(Compiled {
                pattern,
                role: Some(c.role),
                initial: None,
                get_only: c.get_only,
                sticky: c.sticky,
            });
        }
        for e in ENDPOINTS {
            let role = roles.resolve(e.role);
            let initial = if e.initial_sync && roles.contains(WorkerRole::InitialSynchrotron) {
                Some(WorkerRole::InitialSynchrotron)
            } else {
                None
            };
            if role.is_none() && initial.is_none() {
                continue;
            }
            let pattern = Pattern::compile(e.pattern).map_err(|source| RouterError::Pattern {
                pattern: e.pattern.to_owned(),
                source,
            })?;
            routes.push(Compiled {
                pattern,
                role,
                initial,
                get_only: e.get_only,
                sticky: e.sticky,
            });
        }
        // The trie of literal prefixes; each node collects (route, prefix) pairs.
        let mut trie = vec![Node::default()];
        let mut hanging: Vec<Vec<(usize, &[u8])>> = vec![Vec::new()];
        for (index, route) in routes.iter().enumerate() {
            for prefix in route.pattern.literal_prefixes() {
                let mut node = 0usize;
                for &b in prefix.iter() {
                    node = match trie[node].edges.binary_search_by_key(&b, |e| e.0) {
                        Ok(at) => trie[node].edges[at].1 as usize,
                        Err(at) => {
                            trie.push(Node::default());
                            hanging.push(Vec::new());
                            let child = trie.len() - 1;
                            trie[node].edges.insert(at, (b, child as u32));
                            child
                        }
                    };
                }
                // Routes come in ascending order: each list stays sorted.
                if hanging[node].last().map(|h| h.0) != Some(index) {
                    hanging[node].push((index, prefix));
                }
            }
        }
        for (node, members) in hanging.iter().enumerate() {
            for chunk in members.chunks(MAX_SET) {
                group(&routes, chunk, &mut trie[node].groups)?;
            }
        }
        Ok(Router {
            roles,
            routes,
            trie,
        })
    }

    /// The roles this router was built for.
    pub fn roles(&self) -> RoleSet {
        self.roles
    }

    /// Routes a request by method and raw request-target (path and query; the query only
    /// matters for telling initial syncs apart). `GET`-only lines also take `HEAD`.
    pub fn route(&self, method: &[u8], target: &[u8]) -> RouteMatch {
        let (path, query) = hash::split_target(target);
        let is_get = method == b"GET" || method == b"HEAD";
        let mut initial: Option<bool> = None;
        let mut best: Option<(usize, RouteMatch)> = None;
        let mut node = &self.trie[0];
        let mut depth = 0;
        loop {
            for group in &node.groups {
                // Which members may still win: below the best so far, method allowed,
                // and a role to go to (for `/sync`, depending on the query).
                let mut eligible = 0u64;
                let mut roles = [None; MAX_SET];
                for (i, &index) in group.routes.iter().enumerate() {
                    if best.is_some_and(|(b, _)| index as usize >= b) {
                        break;
                    }
                    let route = &self.routes[index as usize];
                    if route.get_only && !is_get {
                        continue;
                    }
                    let role = match route.initial {
                        Some(role)
                            if *initial.get_or_insert_with(|| hash::is_initial_sync(query)) =>
                        {
                            Some(role)
                        }
                        _ => route.role,
                    };
                    if role.is_some() {
                        eligible |= 1 << i;
                        roles[i] = role;
                    }
                }
                if eligible == 0 {
                    continue;
                }
                if let Some(i) = group.set.first_match(&path[depth..], eligible) {
                    let index = group.routes[i] as usize;
                    if let Some(role) = roles[i] {
                        best = Some((
                            index,
                            RouteMatch {
                                role,
                                sticky: self.routes[index].sticky,
                            },
                        ));
                    }
                }
            }
            let Some(&byte) = path.get(depth) else { break };
            match node.edges.binary_search_by_key(&byte, |e| e.0) {
                Ok(at) => node = &self.trie[node.edges[at].1 as usize],
                Err(_) => break,
            }
            depth += 1;
        }
        best.map_or(RouteMatch::MAIN, |(_, m)| m)
    }
}

/// Compiles `members` (routes with the prefix their trie node stands for) into groups,
/// halving a group whose union DFA would be too large.
fn group(
    routes: &[Compiled],
    members: &[(usize, &[u8])],
    out: &mut Vec<Group>,
) -> Result<(), RouterError> {
    let patterns: Vec<(&Pattern, &[u8])> = members
        .iter()
        .map(|&(i, prefix)| (&routes[i].pattern, prefix))
        .collect();
    match PatternSet::new(&patterns) {
        Ok(set) => {
            out.push(Group {
                routes: members.iter().map(|&(i, _)| i as u32).collect(),
                set,
            });
            Ok(())
        }
        Err(_) if members.len() > 1 => {
            let (a, b) = members.split_at(members.len() / 2);
            group(routes, a, out)?;
            group(routes, b, out)
        }
        Err(source) => Err(RouterError::Pattern {
            pattern: routes[members[0].0].pattern.as_str().to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::table::{Endpoint, WorkerRole::*};
    use super::*;

    /// Example requests: (group, method, path, role when only that role has a pool).
    /// Every line of the table must be matched by one of its group's examples.
    #[rustfmt::skip]
    const EXAMPLES: &[(&str, &str, &str, WorkerRole)] = &[
        // Sync requests
        ("Sync requests", "GET", "/_matrix/client/v3/sync", Synchrotron),
        ("Sync requests", "GET", "/_matrix/client/r0/sync", Synchrotron),
        ("Sync requests", "GET", "/_matrix/client/v3/events", Synchrotron),
        ("Sync requests", "GET", "/_matrix/client/api/v1/initialSync", Synchrotron),
        ("Sync requests", "GET", "/_matrix/client/v3/rooms/!r:x/initialSync", Synchrotron),
        // Federation requests
        ("Federation requests", "GET", "/_matrix/federation/v1/version", FederationReader),
        ("Federation requests", "GET", "/_matrix/federation/v1/event/$e", FederationReader),
        ("Federation requests", "GET", "/_matrix/federation/v1/state/!r:x", FederationReader),
        ("Federation requests", "GET", "/_matrix/federation/v1/state_ids/!r:x", FederationReader),
        ("Federation requests", "GET", "/_matrix/federation/v1/backfill/!r:x", FederationReader),
        ("Federation requests", "POST", "/_matrix/federation/v1/get_missing_events/!r:x", FederationReader),
        ("Federation requests", "GET", "/_matrix/federation/v1/publicRooms", FederationReader),
        ("Federation requests", "GET", "/_matrix/federation/v1/query/profile", FederationReader),
        ("Federation requests", "GET", "/_matrix/federation/v1/make_join/!r:x/@u:y", FederationReader),
        ("Federation requests", "GET", "/_matrix/federation/v1/make_leave/!r:x/@u:y", FederationReader),
        ("Federation requests", "PUT", "/_matrix/federation/v2/send_join/!r:x/$e", FederationReader),
        ("Federation requests", "PUT", "/_matrix/federation/v1/send_leave/!r:x/$e", FederationReader),
        ("Federation requests", "GET", "/_matrix/federation/v1/make_knock/!r:x/@u:y", FederationReader),
        ("Federation requests", "PUT", "/_matrix/federation/v1/send_knock/!r:x/$e", FederationReader),
        ("Federation requests", "PUT", "/_matrix/federation/v2/invite/!r:x/$e", FederationReader),
        ("Federation requests", "GET", "/_matrix/federation/v1/event_auth/!r:x/$e", FederationReader),
        ("Federation requests", "GET", "/_matrix/federation/v1/timestamp_to_event/!r:x", FederationReader),
        ("Federation requests", "PUT", "/_matrix/federation/v1/exchange_third_party_invite/!r:x", FederationReader),
        ("Federation requests", "GET", "/_matrix/federation/v1/user/devices/@u:x", FederationReader),
        ("Federation requests", "POST", "/_matrix/key/v2/query", FederationReader),
        ("Federation requests", "GET", "/_matrix/federation/v1/hierarchy/!r:x", FederationReader),
        // Inbound federation transaction request
        ("Inbound federation transaction request", "PUT", "/_matrix/federation/v1/send/1700000000", FederationInbound),
        // Client API requests
        ("Client API requests", "POST", "/_matrix/client/v3/createRoom", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/r0/publicRooms", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v3/rooms/!r:x/joined_members", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v3/rooms/!r:x/context/$e", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v3/rooms/!r:x/members", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v3/rooms/!r:x/state", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v1/rooms/!r:x/hierarchy", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v1/rooms/!r:x/relations/$e", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v1/rooms/!r:x/threads", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/unstable/im.nheko.summary/summary/!r:x", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v1/room_summary/!r:x", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v3/account/3pid", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v3/account/whoami", ClientReader),
        ("Client API requests", "POST", "/_matrix/client/v3/account/deactivate", ClientReader),
        ("Client API requests", "POST", "/_matrix/client/v3/delete_devices", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v3/devices", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/versions", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v3/voip/turnServer", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v3/rooms/!r:x/event/$e", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v3/joined_rooms", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v1/rooms/!r:x/timestamp_to_event", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v3/rooms/!r:x/aliases", ClientReader),
        ("Client API requests", "POST", "/_matrix/client/v3/search", ClientReader),
        ("Client API requests", "POST", "/_matrix/client/v3/user/@u:x/filter", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v3/directory/room/%23a:x", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v3/capabilities", ClientReader),
        ("Client API requests", "GET", "/_matrix/client/v3/notifications", ClientReader),
        // Admin API requests
        ("Admin API requests", "GET", "/_synapse/admin/v1/rooms/!r:x", ClientReader),
        // Encryption requests
        ("Encryption requests", "POST", "/_matrix/client/v3/keys/query", ClientReader),
        ("Encryption requests", "GET", "/_matrix/client/v3/keys/changes", ClientReader),
        ("Encryption requests", "POST", "/_matrix/client/v3/keys/claim", ClientReader),
        ("Encryption requests", "GET", "/_matrix/client/v3/room_keys/version", ClientReader),
        ("Encryption requests", "POST", "/_matrix/client/v3/keys/upload", ClientReader),
        ("Encryption requests", "POST", "/_matrix/client/v3/keys/device_signing/upload", ClientReader),
        ("Encryption requests", "POST", "/_matrix/client/v3/keys/signatures/upload", ClientReader),
        // Registration/login requests
        ("Registration/login requests", "POST", "/_matrix/client/v3/login", ClientReader),
        ("Registration/login requests", "POST", "/_matrix/client/v3/register", ClientReader),
        ("Registration/login requests", "GET", "/_matrix/client/v3/register/available", ClientReader),
        ("Registration/login requests", "GET", "/_matrix/client/v1/register/m.login.registration_token/validity", ClientReader),
        ("Registration/login requests", "GET", "/_matrix/client/v3/password_policy", ClientReader),
        // Event sending requests
        ("Event sending requests", "POST", "/_matrix/client/v3/rooms/!r:x/redact/$e/txn1", EventCreator),
        ("Event sending requests", "PUT", "/_matrix/client/v3/rooms/!r:x/send/m.room.message/txn1", EventCreator),
        ("Event sending requests", "PUT", "/_matrix/client/v3/rooms/!r:x/state/m.room.name/", EventCreator),
        ("Event sending requests", "POST", "/_matrix/client/v3/rooms/!r:x/kick", EventCreator),
        ("Event sending requests", "POST", "/_matrix/client/v3/join/!r:x", EventCreator),
        ("Event sending requests", "POST", "/_matrix/client/v3/knock/!r:x", EventCreator),
        ("Event sending requests", "PUT", "/_matrix/client/v3/profile/@u:x/displayname", EventCreator),
        // User directory search requests
        ("User directory search requests", "POST", "/_matrix/client/v3/user_directory/search", UserDirectory),
        // Unstable MSC4140 support
        ("Unstable MSC4140 support", "GET", "/_matrix/client/unstable/org.matrix.msc4140/delayed_events", ClientReader),
        ("Unstable MSC4140 support", "POST", "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/d1/restart", ClientReader),
        // GET-only
        ("GET only: Push rules requests", "GET", "/_matrix/client/v3/pushrules/global/", ClientReader),
        ("GET only: Account data requests", "GET", "/_matrix/client/v3/user/@u:x/rooms/!r:x/tags", ClientReader),
        ("GET only: Account data requests", "GET", "/_matrix/client/v3/user/@u:x/account_data/m.direct", ClientReader),
        ("GET only: Presence requests", "GET", "/_matrix/client/v3/presence/@u:x/status", ClientReader),
        ("GET only: Admin API requests", "GET", "/_synapse/admin/v2/users/@u:x", ClientReader),
        // Pagination
        ("Pagination requests", "GET", "/_matrix/client/v3/rooms/!r:x/messages", ClientReader),
        // SSO
        ("SSO: for all SSO providers", "GET", "/_matrix/client/v3/login/sso/redirect/oidc-github", Sso),
        ("SSO: for all SSO providers", "GET", "/_synapse/client/pick_idp", Sso),
        ("SSO: for all SSO providers", "GET", "/_synapse/client/pick_username/account_details", Sso),
        ("SSO: for all SSO providers", "POST", "/_synapse/client/new_user_consent", Sso),
        ("SSO: for all SSO providers", "GET", "/_synapse/client/sso_register", Sso),
        ("SSO: OpenID Connect requests", "GET", "/_synapse/client/oidc/callback", Sso),
        ("SSO: SAML requests", "POST", "/_synapse/client/saml2/authn_response", Sso),
        ("SSO: CAS requests", "GET", "/_matrix/client/r0/login/cas/ticket", Sso),
        // Stream writers
        ("The typing stream", "PUT", "/_matrix/client/v3/rooms/!r:x/typing/@u:x", Typing),
        ("The to_device stream", "PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/txn1", ToDevice),
        ("The account_data stream", "PUT", "/_matrix/client/v3/user/@u:x/rooms/!r:x/tags/m.favourite", AccountData),
        ("The account_data stream", "PUT", "/_matrix/client/v3/user/@u:x/account_data/m.direct", AccountData),
        ("The receipts stream", "POST", "/_matrix/client/v3/rooms/!r:x/receipt/m.read/$e", Receipts),
        ("The receipts stream", "POST", "/_matrix/client/v3/rooms/!r:x/read_markers", Receipts),
        ("The presence stream", "PUT", "/_matrix/client/v3/presence/@u:x/status", Presence),
        ("The push_rules stream", "PUT", "/_matrix/client/v3/pushrules/global/override/rule1", PushRules),
        ("The device_lists stream", "POST", "/_matrix/client/r0/delete_devices", DeviceLists),
        ("The device_lists stream", "PUT", "/_matrix/client/v3/devices/ABCDEF", DeviceLists),
        ("The device_lists stream", "POST", "/_matrix/client/v3/keys/upload", DeviceLists),
        ("The device_lists stream", "POST", "/_matrix/client/unstable/keys/device_signing/upload", DeviceLists),
        ("The device_lists stream", "POST", "/_matrix/client/v3/keys/signatures/upload", DeviceLists),
        ("The quarantined_media_changes stream", "POST", "/_synapse/admin/v1/quarantine_media/!r:x", MediaRepository),
        // Media repository
        ("media_repository", "GET", "/_matrix/media/v3/download/x.org/abc", MediaRepository),
        ("media_repository", "GET", "/_matrix/client/v1/media/thumbnail/x.org/abc", MediaRepository),
        ("media_repository", "GET", "/_matrix/federation/v1/media/download/abc", MediaRepository),
        ("media_repository", "POST", "/_synapse/admin/v1/purge_media_cache", MediaRepository),
        ("media_repository", "GET", "/_synapse/admin/v1/room/!r:x/media", MediaRepository),
        ("media_repository", "GET", "/_synapse/admin/v1/user/@u:x/media", MediaRepository),
        ("media_repository", "DELETE", "/_synapse/admin/v1/media/x.org/abc", MediaRepository),
        ("media_repository", "POST", "/_synapse/admin/v1/quarantine_media/!r:x", MediaRepository),
        ("media_repository", "GET", "/_synapse/admin/v1/users/@u:x/media", MediaRepository),
    ];

    fn only(role: WorkerRole) -> Router {
        Router::new([role].into_iter().collect())
    }

    fn method_ok(e: &Endpoint, method: &str) -> bool {
        !e.get_only || method == "GET" || method == "HEAD"
    }

    #[test]
    fn every_table_line_has_an_example() {
        let mut missing = Vec::new();
        for e in ENDPOINTS {
            let pattern = Pattern::compile(e.pattern).unwrap();
            let covered = EXAMPLES.iter().any(|&(group, method, path, role)| {
                group == e.group
                    && role == e.role
                    && method_ok(e, method)
                    && pattern.is_match(path.as_bytes())
            });
            if !covered {
                missing.push(e.pattern);
            }
        }
        assert!(missing.is_empty(), "lines without an example: {missing:#?}");
    }

    fn check_group(group: &str) {
        let examples: Vec<_> = EXAMPLES.iter().filter(|e| e.0 == group).collect();
        assert!(!examples.is_empty(), "no examples for {group}");
        let none = Router::new(RoleSet::empty());
        let mut routers = std::collections::HashMap::new();
        for &&(_, method, path, role) in &examples {
            let router = routers.entry(role).or_insert_with(|| only(role));
            let got = router.route(method.as_bytes(), path.as_bytes());
            assert_eq!(got.role, role, "{method} {path}");
            // Nothing configured: the main process.
            let main = none.route(method.as_bytes(), path.as_bytes());
            assert_eq!(main, RouteMatch::MAIN, "{method} {path}");
        }
    }

    macro_rules! group_tests {
        ($($name:ident => $group:literal,)*) => {$(
            #[test]
            fn $name() {
                check_group($group);
            }
        )*};
    }

    group_tests! {
        sync_requests => "Sync requests",
        federation_requests => "Federation requests",
        inbound_federation_transactions => "Inbound federation transaction request",
        client_api_requests => "Client API requests",
        admin_api_requests => "Admin API requests",
        encryption_requests => "Encryption requests",
        registration_login_requests => "Registration/login requests",
        event_sending_requests => "Event sending requests",
        user_directory_search => "User directory search requests",
        msc4140_delayed_events => "Unstable MSC4140 support",
        get_only_push_rules => "GET only: Push rules requests",
        get_only_account_data => "GET only: Account data requests",
        get_only_presence => "GET only: Presence requests",
        get_only_admin => "GET only: Admin API requests",
        pagination_requests => "Pagination requests",
        sso_all_providers => "SSO: for all SSO providers",
        sso_oidc => "SSO: OpenID Connect requests",
        sso_saml => "SSO: SAML requests",
        sso_cas => "SSO: CAS requests",
        typing_stream => "The typing stream",
        to_device_stream => "The to_device stream",
        account_data_stream => "The account_data stream",
        receipts_stream => "The receipts stream",
        presence_stream => "The presence stream",
        push_rules_stream => "The push_rules stream",
        device_lists_stream => "The device_lists stream",
        quarantined_media_stream => "The quarantined_media_changes stream",
        media_repository => "media_repository",
    }

    #[test]
    fn every_group_has_a_test() {
        let groups: std::collections::BTreeSet<&str> = ENDPOINTS.iter().map(|e| e.group).collect();
        let tested: std::collections::BTreeSet<&str> = EXAMPLES.iter().map(|e| e.0).collect();
        assert_eq!(groups, tested);
        assert_eq!(groups.len(), 28);
    }

    #[test]
    fn get_only_lines_take_get_and_head_only() {
        let router = only(ClientReader);
        for path in [
            "/_matrix/client/v3/pushrules/global/",
            "/_matrix/client/v3/user/@u:x/rooms/!r:x/tags",
            "/_matrix/client/r0/user/@u:x/account_data/m.direct",
            "/_matrix/client/v3/presence/@u:x/status",
            "/_synapse/admin/v2/users/@u:x",
        ] {
            for method in ["GET", "HEAD"] {
                assert_eq!(
                    router.route(method.as_bytes(), path.as_bytes()).role,
                    ClientReader
                );
            }
            for method in ["PUT", "POST", "DELETE", "OPTIONS"] {
                assert_eq!(
                    router.route(method.as_bytes(), path.as_bytes()),
                    RouteMatch::MAIN,
                    "{method} {path}"
                );
            }
        }
        // With the stream writer configured, every method goes to it.
        let router = Router::new([ClientReader, PushRules].into_iter().collect());
        for method in ["GET", "PUT", "DELETE"] {
            assert_eq!(
                router
                    .route(
                        method.as_bytes(),
                        b"/_matrix/client/v3/pushrules/global/override/r"
                    )
                    .role,
                PushRules
            );
        }
    }

    /// With every role configured, the table's precedence decides.
    #[test]
    fn precedence_with_every_role() {
        let router = Router::new(RoleSet::all());
        let cases: &[(&str, &str, WorkerRole)] = &[
            ("GET", "/_matrix/client/v3/devices", DeviceLists),
            ("POST", "/_matrix/client/v3/keys/upload", DeviceLists),
            ("POST", "/_matrix/client/v3/keys/query", ClientReader),
            (
                "GET",
                "/_matrix/client/v3/user/@u:x/account_data/m.direct",
                AccountData,
            ),
            ("GET", "/_matrix/client/v3/pushrules/", PushRules),
            ("GET", "/_matrix/client/v3/presence/@u:x/status", Presence),
            ("PUT", "/_matrix/client/v3/rooms/!r:x/typing/@u:x", Typing),
            (
                "POST",
                "/_synapse/admin/v1/quarantine_media/!r:x",
                MediaRepository,
            ),
            ("GET", "/_matrix/client/v3/sync?since=s1", Synchrotron),
            ("GET", "/_matrix/client/v3/sync", InitialSynchrotron),
            (
                "GET",
                "/_matrix/client/v3/sync?since=s1&full_state=true",
                InitialSynchrotron,
            ),
            ("GET", "/_matrix/client/v3/events?from=s1", Synchrotron),
            (
                "PUT",
                "/_matrix/client/v3/rooms/!r:x/state/m.room.topic/",
                EventCreator,
            ),
            ("GET", "/_matrix/client/v3/rooms/!r:x/state", ClientReader),
            ("PUT", "/_matrix/federation/v1/send/txn", FederationInbound),
            (
                "PUT",
                "/_matrix/federation/v1/send_join/!r:x/$e",
                FederationReader,
            ),
            (
                "GET",
                "/_matrix/client/v3/rooms/!r:x/messages?dir=b",
                ClientReader,
            ),
            ("GET", "/_matrix/client/v3/login", ClientReader),
            ("GET", "/_matrix/client/v3/login/sso/redirect", Sso),
            (
                "POST",
                "/_matrix/client/v3/user_directory/search",
                UserDirectory,
            ),
            ("GET", "/_matrix/media/v3/config", MediaRepository),
            // Not in the table: the main process.
            (
                "GET",
                "/_matrix/client/v3/account/3pid/email/requestToken",
                Main,
            ),
            ("POST", "/_matrix/client/v3/logout", Main),
            ("GET", "/_synapse/admin/v1/users/@u:x/joined_rooms", Main),
            ("GET", "/health", Main),
            ("GET", "/", Main),
            ("GET", "", Main),
            ("GET", "/_matrix/client/v3/syncX", Main),
            // Raw bytes: `%2F` is not a segment boundary.
            ("GET", "/_matrix/client/v3%2Fsync", Main),
        ];
        for &(method, target, role) in cases {
            assert_eq!(
                router.route(method.as_bytes(), target.as_bytes()).role,
                role,
                "{method} {target}"
            );
        }
    }

    #[test]
    fn sticky_keys_come_with_the_match() {
        let router = Router::new(RoleSet::all());
        let r = |t: &str| router.route(b"GET", t.as_bytes()).sticky;
        assert_eq!(r("/_matrix/client/v3/sync"), Some(KeyKind::User));
        assert_eq!(r("/_matrix/client/v3/sync?since=1"), Some(KeyKind::User));
        assert_eq!(r("/_matrix/client/v3/events"), Some(KeyKind::User));
        assert_eq!(
            r("/_matrix/client/v3/rooms/!r:x/messages"),
            Some(KeyKind::Room)
        );
        assert_eq!(r("/_matrix/federation/v1/send/1"), Some(KeyKind::Origin));
        assert_eq!(r("/_matrix/client/v3/rooms/!r:x/members"), None);
        assert_eq!(
            r("/_matrix/client/v3/rooms/!r:x/send/m.room.message/1"),
            None
        );
    }

    #[test]
    fn fallbacks_and_partial_configurations() {
        // Only initial_synchrotron: initial syncs there, incremental ones to main.
        let router = only(InitialSynchrotron);
        assert_eq!(
            router.route(b"GET", b"/_matrix/client/v3/sync").role,
            InitialSynchrotron
        );
        assert_eq!(
            router
                .route(b"GET", b"/_matrix/client/v3/sync?since=s")
                .role,
            Main
        );
        // Only synchrotron: every sync there.
        let router = only(Synchrotron);
        assert_eq!(
            router.route(b"GET", b"/_matrix/client/v3/sync").role,
            Synchrotron
        );
        // user_directory falls back to client_reader; federation_inbound to federation_reader.
        assert_eq!(
            only(ClientReader)
                .route(b"POST", b"/_matrix/client/v3/user_directory/search")
                .role,
            ClientReader
        );
        let fed = only(FederationReader).route(b"PUT", b"/_matrix/federation/v1/send/1");
        assert_eq!(fed.role, FederationReader);
        assert_eq!(fed.sticky, Some(KeyKind::Origin), "still by origin");
        // SSO never falls back: it must stay in one process.
        assert_eq!(
            only(ClientReader)
                .route(b"GET", b"/_synapse/client/pick_idp")
                .role,
            Main
        );
        // Without stream writers the generic copies take their lines.
        let router = only(ClientReader);
        assert_eq!(
            router.route(b"PUT", b"/_matrix/client/v3/devices/ABC").role,
            ClientReader
        );
        assert_eq!(
            router
                .route(b"PUT", b"/_matrix/client/v3/rooms/!r:x/typing/@u:x")
                .role,
            Main
        );
    }

    #[test]
    fn custom_routes_come_first() {
        let roles: RoleSet = [ClientReader, Synchrotron].into_iter().collect();
        let custom = [CustomRoute {
            pattern: "^/_matrix/client/unstable/org.matrix.simplified_msc3575/sync$".into(),
            role: Synchrotron,
            get_only: false,
            sticky: Some(KeyKind::User),
        }];
        let router = Router::with_custom(roles, &custom).unwrap();
        let m = router.route(
            b"POST",
            b"/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
        );
        assert_eq!(
            m,
            RouteMatch {
                role: Synchrotron,
                sticky: Some(KeyKind::User)
            }
        );
        let bad = CustomRoute {
            pattern: "/no/anchor".into(),
            ..custom[0].clone()
        };
        assert!(matches!(
            Router::with_custom(roles, &[bad]),
            Err(RouterError::Pattern { .. })
        ));
        let no_pool = CustomRoute {
            role: MediaRepository,
            ..custom[0].clone()
        };
        assert_eq!(
            Router::with_custom(roles, &[no_pool]).unwrap_err(),
            RouterError::NoPool {
                pattern: custom[0].pattern.clone(),
                role: MediaRepository
            }
        );
    }

    /// The table read top to bottom, one pattern at a time: what the trie and the union
    /// DFAs must agree with.
    fn reference(compiled: &[Pattern], roles: RoleSet, method: &str, target: &str) -> RouteMatch {
        let (path, query) = hash::split_target(target.as_bytes());
        let is_get = method == "GET" || method == "HEAD";
        for (e, pattern) in ENDPOINTS.iter().zip(compiled) {
            if e.get_only && !is_get {
                continue;
            }
            let role = if e.initial_sync
                && roles.contains(InitialSynchrotron)
                && hash::is_initial_sync(query)
            {
                Some(InitialSynchrotron)
            } else {
                roles.resolve(e.role)
            };
            if let Some(role) = role {
                if pattern.is_match(path) {
                    return RouteMatch {
                        role,
                        sticky: e.sticky,
                    };
                }
            }
        }
        RouteMatch::MAIN
    }

    /// Paths: every example, cut at every byte, extended, and random segment soup.
    fn corpus() -> Vec<String> {
        let mut out = Vec::new();
        for &(_, _, path, _) in EXAMPLES {
            for cut in 0..=path.len() {
                out.push(path[..cut].to_string());
            }
            for tail in [
                "/",
                "/x",
                "x",
                "/messages",
                "/state",
                "?since=1",
                "?full_state=true",
            ] {
                out.push(format!("{path}{tail}"));
            }
        }
        let words = [
            "_matrix",
            "client",
            "federation",
            "media",
            "_synapse",
            "admin",
            "v1",
            "v2",
            "v3",
            "r0",
            "api",
            "unstable",
            "rooms",
            "!r:x",
            "send",
            "state",
            "messages",
            "sync",
            "typing",
            "tags",
            "account_data",
            "keys",
            "upload",
            "devices",
            "context",
            "join",
            "",
            "user",
            "media",
            "login",
            "sso",
            "redirect",
            "%2F",
            "initialSync",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let starts = [
            "",
            "/_matrix/client/v3",
            "/_matrix/client/unstable",
            "/_matrix/client/r0/rooms/!r:x",
            "/_matrix/federation/v1",
            "/_synapse/admin/v1",
        ];
        for _ in 0..3000 {
            let n = 1 + next() % 5;
            let mut path = starts[(next() % starts.len() as u64) as usize].to_string();
            for _ in 0..n {
                path.push('/');
                path.push_str(words[(next() % words.len() as u64) as usize]);
            }
            out.push(path);
        }
        out
    }

    #[test]
    fn trie_and_union_dfas_agree_with_the_table_read_in_order() {
        let compiled: Vec<Pattern> = ENDPOINTS
            .iter()
            .map(|e| Pattern::compile(e.pattern).unwrap())
            .collect();
        let mut role_sets = vec![RoleSet::all(), RoleSet::empty()];
        role_sets.extend(
            WorkerRole::WORKERS
                .iter()
                .map(|&r| [r].into_iter().collect::<RoleSet>()),
        );
        role_sets.push(
            [ClientReader, InitialSynchrotron, FederationReader]
                .into_iter()
                .collect(),
        );
        role_sets.push(
            [Synchrotron, EventCreator, DeviceLists, Sso]
                .into_iter()
                .collect(),
        );
        let paths = corpus();
        let (mut checked, mut to_workers) = (0, 0);
        for roles in role_sets {
            let router = Router::new(roles);
            for path in &paths {
                for method in ["GET", "PUT"] {
                    let got = router.route(method.as_bytes(), path.as_bytes());
                    assert_eq!(
                        got,
                        reference(&compiled, roles, method, path),
                        "{method} {path} with {roles:?}"
                    );
                    checked += 1;
                    if roles == RoleSet::all() {
                        to_workers += usize::from(got.role != Main);
                    }
                }
            }
        }
        assert!(checked > 100_000, "{checked}");
        // The corpus exercises the table, not just the way to the main process.
        let per_set = paths.len() * 2;
        assert!(to_workers * 100 > per_set * 15, "{to_workers} of {per_set}");
    }

    /// The trie only runs patterns whose literal prefix the path has, and a long hostile
    /// path routes in linear time.
    #[test]
    fn long_paths_route_quickly_and_correctly() {
        let router = Router::new(RoleSet::all());
        let evil = "/_matrix/client/v3/rooms/".to_string() + &"/rooms/x/contexts".repeat(480);
        assert!(evil.len() < 8 * 1024 + 100);
        assert_eq!(router.route(b"GET", evil.as_bytes()).role, Main);
        let ok = evil.clone() + "/messages";
        assert_eq!(router.route(b"GET", ok.as_bytes()).role, ClientReader);
        let unstable =
            "/_matrix/client/unstable/".to_string() + &"a/".repeat(4000) + "rooms/x/aliases";
        assert_eq!(router.route(b"GET", unstable.as_bytes()).role, ClientReader);
    }
}
