//! Synapse's worker endpoint table as data: which path patterns each kind of worker may
//! serve, in the order they are tried.
//!
//! The patterns are copied verbatim from Synapse's `docs/workers.md` at [`SOURCE`], so a
//! diff against a newer Synapse is a diff of this file. Only two liberties are taken, both
//! marked: the media prefixes, which the document lists as plain paths, are anchored with
//! `^`, and the `quarantined_media_changes` stream (a media-repository path) goes to the
//! media repository role.
//!
//! Order is precedence ([`crate::workers::Router`] takes the first match whose role has a
//! pool): stream writers first (they must receive their paths directly), then the media
//! repository, synchrotrons, event creators, inbound federation, and finally the federation
//! reader, client reader, SSO and user directory patterns. A pattern whose role has no pool
//! is skipped, so a later one (often the generic client reader's copy of the same pattern)
//! can take it; unmatched requests go to the main process.

use std::fmt;
use std::str::FromStr;

use super::balance::Policy;
use super::hash::KeyKind;

/// Where the table was taken from.
pub const SOURCE: &str =
    "element-hq/synapse@a58ad44eb0ce3cc14153f921206f322e17339dc5:docs/workers.md";

/// A kind of Synapse worker, named as in the configuration (`[workers.<name>]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkerRole {
    /// `/sync`, `/events`, `/initialSync`, hashed by user.
    Synchrotron,
    /// An optional separate pool for initial syncs (no `since`, or `full_state=true`).
    InitialSynchrotron,
    /// The generic client API.
    ClientReader,
    /// Sending events, membership, profiles.
    EventCreator,
    /// Inbound federation transactions, hashed by origin.
    FederationInbound,
    /// The rest of the federation API.
    FederationReader,
    MediaRepository,
    /// User directory search.
    UserDirectory,
    /// SSO login flows (keep one process: Synapse keeps SSO sessions in memory).
    Sso,
    // Stream writers.
    Typing,
    ToDevice,
    AccountData,
    Receipts,
    Presence,
    PushRules,
    DeviceLists,
    /// The main process: everything no configured worker claims.
    Main,
}

impl WorkerRole {
    /// Every role with a configuration name (all but [`WorkerRole::Main`]).
    pub const WORKERS: [WorkerRole; 16] = [
        WorkerRole::Synchrotron,
        WorkerRole::InitialSynchrotron,
        WorkerRole::ClientReader,
        WorkerRole::EventCreator,
        WorkerRole::FederationInbound,
        WorkerRole::FederationReader,
        WorkerRole::MediaRepository,
        WorkerRole::UserDirectory,
        WorkerRole::Sso,
        WorkerRole::Typing,
        WorkerRole::ToDevice,
        WorkerRole::AccountData,
        WorkerRole::Receipts,
        WorkerRole::Presence,
        WorkerRole::PushRules,
        WorkerRole::DeviceLists,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerRole::Synchrotron => "synchrotron",
            WorkerRole::InitialSynchrotron => "initial_synchrotron",
            WorkerRole::ClientReader => "client_reader",
            WorkerRole::EventCreator => "event_creator",
            WorkerRole::FederationInbound => "federation_inbound",
            WorkerRole::FederationReader => "federation_reader",
            WorkerRole::MediaRepository => "media_repository",
            WorkerRole::UserDirectory => "user_directory",
            WorkerRole::Sso => "sso",
            WorkerRole::Typing => "typing",
            WorkerRole::ToDevice => "to_device",
            WorkerRole::AccountData => "account_data",
            WorkerRole::Receipts => "receipts",
            WorkerRole::Presence => "presence",
            WorkerRole::PushRules => "push_rules",
            WorkerRole::DeviceLists => "device_lists",
            WorkerRole::Main => "main",
        }
    }

    /// A stream writer must get its stream's paths for every method.
    pub fn is_stream_writer(self) -> bool {
        matches!(
            self,
            WorkerRole::Typing
                | WorkerRole::ToDevice
                | WorkerRole::AccountData
                | WorkerRole::Receipts
                | WorkerRole::Presence
                | WorkerRole::PushRules
                | WorkerRole::DeviceLists
        )
    }

    /// The role that takes this role's patterns when it has no pool (before the main
    /// process): a sub-pool's parent, or the generic worker type that can serve them.
    /// SSO has none on purpose: its flows must stay in one process.
    pub fn fallback(self) -> Option<WorkerRole> {
        match self {
            WorkerRole::InitialSynchrotron => Some(WorkerRole::Synchrotron),
            WorkerRole::UserDirectory => Some(WorkerRole::ClientReader),
            WorkerRole::FederationInbound => Some(WorkerRole::FederationReader),
            _ => None,
        }
    }

    /// The balancing policy a pool of this role gets unless configured otherwise.
    pub fn default_policy(self) -> Policy {
        match self {
            WorkerRole::Synchrotron | WorkerRole::InitialSynchrotron => Policy::Hash(KeyKind::User),
            WorkerRole::EventCreator => Policy::Hash(KeyKind::Room),
            WorkerRole::FederationInbound => Policy::Hash(KeyKind::Origin),
            // One browser's SSO round trip on one process.
            WorkerRole::Sso => Policy::Hash(KeyKind::Client),
            WorkerRole::ClientReader
            | WorkerRole::FederationReader
            | WorkerRole::MediaRepository
            | WorkerRole::UserDirectory => Policy::LeastConnections,
            _ => Policy::RoundRobin,
        }
    }
}

impl fmt::Display for WorkerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown worker type {0:?} (expected one of: synchrotron, initial_synchrotron, client_reader, event_creator, federation_inbound, federation_reader, media_repository, user_directory, sso, typing, to_device, account_data, receipts, presence, push_rules, device_lists)")]
pub struct UnknownRole(pub String);

/// Parses a configuration name. `main` is not one: the main process is the homeserver pool.
impl FromStr for WorkerRole {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkerRole::WORKERS
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// A set of roles (those with a pool configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoleSet(u32);

impl RoleSet {
    pub const fn empty() -> Self {
        RoleSet(0)
    }

    pub fn all() -> Self {
        WorkerRole::WORKERS.into_iter().collect()
    }

    pub fn insert(&mut self, role: WorkerRole) {
        self.0 |= 1 << role as u32;
    }

    pub fn contains(self, role: WorkerRole) -> bool {
        self.0 & (1 << role as u32) != 0
    }

    /// The first of `role` and its fallbacks that is in the set.
    pub fn resolve(self, role: WorkerRole) -> Option<WorkerRole> {
        let mut r = Some(role);
        while let Some(role) = r {
            if self.contains(role) {
                return Some(role);
            }
            r = role.fallback();
        }
        None
    }
}

impl FromIterator<WorkerRole> for RoleSet {
    fn from_iter<I: IntoIterator<Item = WorkerRole>>(iter: I) -> Self {
        let mut set = RoleSet::empty();
        iter.into_iter().for_each(|r| set.insert(r));
        set
    }
}

/// One line of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The heading or comment the pattern sits under in workers.md.
    pub group: &'static str,
    pub pattern: &'static str,
    pub role: WorkerRole,
    /// Only `GET` (and `HEAD`) may go to this role by this line.
    pub get_only: bool,
    /// Requests must stick to one backend by this key, whatever the pool's policy.
    pub sticky: Option<KeyKind>,
    /// `/sync`: initial syncs may go to the `initial_synchrotron` pool.
    pub initial_sync: bool,
}

const fn ep(group: &'static str, role: WorkerRole, pattern: &'static str) -> Endpoint {
    Endpoint {
        group,
        pattern,
        role,
        get_only: false,
        sticky: None,
        initial_sync: false,
    }
}

const fn get(group: &'static str, role: WorkerRole, pattern: &'static str) -> Endpoint {
    Endpoint {
        get_only: true,
        ..ep(group, role, pattern)
    }
}

const fn sticky(
    group: &'static str,
    role: WorkerRole,
    key: KeyKind,
    pattern: &'static str,
) -> Endpoint {
    Endpoint {
        sticky: Some(key),
        ..ep(group, role, pattern)
    }
}

use KeyKind::{Origin, Room, User};
use WorkerRole::*;

const SYNC: &str = "Sync requests";
const FED: &str = "Federation requests";
const FED_IN: &str = "Inbound federation transaction request";
const CLIENT: &str = "Client API requests";
const ADMIN: &str = "Admin API requests";
const E2E: &str = "Encryption requests";
const LOGIN: &str = "Registration/login requests";
const SEND: &str = "Event sending requests";
const USER_DIR: &str = "User directory search requests";
const MSC4140: &str = "Unstable MSC4140 support";
const GET_PUSH: &str = "GET only: Push rules requests";
const GET_ACCOUNT: &str = "GET only: Account data requests";
const GET_PRESENCE: &str = "GET only: Presence requests";
const GET_ADMIN: &str = "GET only: Admin API requests";
const PAGINATION: &str = "Pagination requests";
const SSO: &str = "SSO: for all SSO providers";
const OIDC: &str = "SSO: OpenID Connect requests";
const SAML: &str = "SSO: SAML requests";
const CAS: &str = "SSO: CAS requests";
const S_TYPING: &str = "The typing stream";
const S_TO_DEVICE: &str = "The to_device stream";
const S_ACCOUNT: &str = "The account_data stream";
const S_RECEIPTS: &str = "The receipts stream";
const S_PRESENCE: &str = "The presence stream";
const S_PUSH: &str = "The push_rules stream";
const S_DEVICES: &str = "The device_lists stream";
const S_QUARANTINE: &str = "The quarantined_media_changes stream";
const MEDIA: &str = "media_repository";

/// The table, in precedence order.
#[rustfmt::skip]
pub static ENDPOINTS: &[Endpoint] = &[
    // ---- Stream writers: their paths, every method.
    ep(S_TYPING, Typing, "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/typing"),
    ep(S_TO_DEVICE, ToDevice, "^/_matrix/client/(r0|v3|unstable)/sendToDevice/"),
    ep(S_ACCOUNT, AccountData, "^/_matrix/client/(r0|v3|unstable)/.*/tags"),
    ep(S_ACCOUNT, AccountData, "^/_matrix/client/(r0|v3|unstable)/.*/account_data"),
    ep(S_RECEIPTS, Receipts, "^/_matrix/client/(r0|v3|unstable)/rooms/.*/receipt"),
    ep(S_RECEIPTS, Receipts, "^/_matrix/client/(r0|v3|unstable)/rooms/.*/read_markers"),
    ep(S_PRESENCE, Presence, "^/_matrix/client/(api/v1|r0|v3|unstable)/presence/"),
    ep(S_PUSH, PushRules, "^/_matrix/client/(api/v1|r0|v3|unstable)/pushrules/"),
    ep(S_DEVICES, DeviceLists, "^/_matrix/client/(r0|v3)/delete_devices$"),
    ep(S_DEVICES, DeviceLists, "^/_matrix/client/(api/v1|r0|v3|unstable)/devices(/|$)"),
    ep(S_DEVICES, DeviceLists, "^/_matrix/client/(r0|v3|unstable)/keys/upload"),
    ep(S_DEVICES, DeviceLists, "^/_matrix/client/(api/v1|r0|v3|unstable)/keys/device_signing/upload$"),
    ep(S_DEVICES, DeviceLists, "^/_matrix/client/(api/v1|r0|v3|unstable)/keys/signatures/upload$"),
    // The document lists this stream's one path under the media repository as well; it
    // is a media admin endpoint, so it goes there (there is no separate role for it).
    ep(S_QUARANTINE, MediaRepository, "^/_synapse/admin/v1/quarantine_media/.*$"),
    // ---- Media repository. The document gives the first three as plain prefixes;
    // anchored here (a prefix is what they mean).
    ep(MEDIA, MediaRepository, "^/_matrix/media/"),
    ep(MEDIA, MediaRepository, "^/_matrix/client/v1/media/"),
    ep(MEDIA, MediaRepository, "^/_matrix/federation/v1/media/"),
    ep(MEDIA, MediaRepository, "^/_synapse/admin/v1/purge_media_cache$"),
    ep(MEDIA, MediaRepository, "^/_synapse/admin/v1/room/.*/media.*$"),
    ep(MEDIA, MediaRepository, "^/_synapse/admin/v1/user/.*/media.*$"),
    ep(MEDIA, MediaRepository, "^/_synapse/admin/v1/media/.*$"),
    ep(MEDIA, MediaRepository, "^/_synapse/admin/v1/users/.*/media$"),
    // ---- Synchrotrons: one user's syncs on one worker.
    Endpoint {
        initial_sync: true,
        ..sticky(SYNC, Synchrotron, User, "^/_matrix/client/(r0|v3)/sync$")
    },
    sticky(SYNC, Synchrotron, User, "^/_matrix/client/(api/v1|r0|v3)/events$"),
    sticky(SYNC, Synchrotron, User, "^/_matrix/client/(api/v1|r0|v3)/initialSync$"),
    sticky(SYNC, Synchrotron, User, "^/_matrix/client/(api/v1|r0|v3)/rooms/[^/]+/initialSync$"),
    // ---- Event creators.
    ep(SEND, EventCreator, "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/redact"),
    ep(SEND, EventCreator, "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/send"),
    ep(SEND, EventCreator, "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/state/"),
    ep(SEND, EventCreator, "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/(join|invite|leave|ban|unban|kick)$"),
    ep(SEND, EventCreator, "^/_matrix/client/(api/v1|r0|v3|unstable)/join/"),
    ep(SEND, EventCreator, "^/_matrix/client/(api/v1|r0|v3|unstable)/knock/"),
    ep(SEND, EventCreator, "^/_matrix/client/(api/v1|r0|v3|unstable)/profile/"),
    // ---- Inbound federation: one origin's transactions on one worker, in order.
    sticky(FED_IN, FederationInbound, Origin, "^/_matrix/federation/v1/send/"),
    // ---- Federation readers.
    ep(FED, FederationReader, "^/_matrix/federation/v1/version$"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/event/"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/state/"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/state_ids/"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/backfill/"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/get_missing_events/"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/publicRooms"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/query/"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/make_join/"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/make_leave/"),
    ep(FED, FederationReader, "^/_matrix/federation/(v1|v2)/send_join/"),
    ep(FED, FederationReader, "^/_matrix/federation/(v1|v2)/send_leave/"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/make_knock/"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/send_knock/"),
    ep(FED, FederationReader, "^/_matrix/federation/(v1|v2)/invite/"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/event_auth/"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/timestamp_to_event/"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/exchange_third_party_invite/"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/user/devices/"),
    ep(FED, FederationReader, "^/_matrix/key/v2/query"),
    ep(FED, FederationReader, "^/_matrix/federation/v1/hierarchy/"),
    // ---- Client readers (the generic client API).
    ep(CLIENT, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/createRoom$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/publicRooms$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/joined_members$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/context/.*$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/members$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/state$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/v1/rooms/.*/hierarchy$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(v1|unstable)/rooms/.*/relations/"),
    ep(CLIENT, ClientReader, "^/_matrix/client/v1/rooms/.*/threads$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/unstable/im.nheko.summary/summary/.*$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/v1/room_summary/.*$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(r0|v3|unstable)/account/3pid$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(r0|v3|unstable)/account/whoami$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(r0|v3|unstable)/account/deactivate$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(r0|v3)/delete_devices$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/devices(/|$)"),
    ep(CLIENT, ClientReader, "^/_matrix/client/versions$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/voip/turnServer$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/event/"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/joined_rooms$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/v1/rooms/.*/timestamp_to_event$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable/.*)/rooms/.*/aliases"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/search$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(r0|v3|unstable)/user/.*/filter(/|$)"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/directory/room/.*$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(r0|v3|unstable)/capabilities$"),
    ep(CLIENT, ClientReader, "^/_matrix/client/(r0|v3|unstable)/notifications$"),
    ep(ADMIN, ClientReader, "^/_synapse/admin/v1/rooms/[^/]+$"),
    ep(E2E, ClientReader, "^/_matrix/client/(r0|v3|unstable)/keys/query$"),
    ep(E2E, ClientReader, "^/_matrix/client/(r0|v3|unstable)/keys/changes$"),
    ep(E2E, ClientReader, "^/_matrix/client/(r0|v3|unstable)/keys/claim$"),
    ep(E2E, ClientReader, "^/_matrix/client/(r0|v3|unstable)/room_keys/"),
    ep(E2E, ClientReader, "^/_matrix/client/(r0|v3|unstable)/keys/upload"),
    ep(E2E, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/keys/device_signing/upload$"),
    ep(E2E, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/keys/signatures/upload$"),
    ep(LOGIN, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/login$"),
    ep(LOGIN, ClientReader, "^/_matrix/client/(r0|v3|unstable)/register$"),
    ep(LOGIN, ClientReader, "^/_matrix/client/(r0|v3|unstable)/register/available$"),
    ep(LOGIN, ClientReader, "^/_matrix/client/v1/register/m.login.registration_token/validity$"),
    ep(LOGIN, ClientReader, "^/_matrix/client/(r0|v3|unstable)/password_policy$"),
    ep(MSC4140, ClientReader, "^/_matrix/client/unstable/org.matrix.msc4140/delayed_events(/.*/restart)?$"),
    get(GET_PUSH, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/pushrules/"),
    get(GET_ACCOUNT, ClientReader, "^/_matrix/client/(r0|v3|unstable)/.*/tags"),
    get(GET_ACCOUNT, ClientReader, "^/_matrix/client/(r0|v3|unstable)/.*/account_data"),
    get(GET_PRESENCE, ClientReader, "^/_matrix/client/(api/v1|r0|v3|unstable)/presence/"),
    get(GET_ADMIN, ClientReader, "^/_synapse/admin/v2/users/[^/]+$"),
    // All requests for one room's pagination on one worker.
    sticky(PAGINATION, ClientReader, Room, "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/messages$"),
    // ---- SSO (only useful when Synapse has SSO configured).
    ep(SSO, Sso, "^/_matrix/client/(api/v1|r0|v3|unstable)/login/sso/redirect"),
    ep(SSO, Sso, "^/_synapse/client/pick_idp$"),
    ep(SSO, Sso, "^/_synapse/client/pick_username"),
    ep(SSO, Sso, "^/_synapse/client/new_user_consent$"),
    ep(SSO, Sso, "^/_synapse/client/sso_register$"),
    ep(OIDC, Sso, "^/_synapse/client/oidc/callback$"),
    ep(SAML, Sso, "^/_synapse/client/saml2/authn_response$"),
    ep(CAS, Sso, "^/_matrix/client/(api/v1|r0|v3|unstable)/login/cas/ticket$"),
    // ---- User directory.
    ep(USER_DIR, UserDirectory, "^/_matrix/client/(r0|v3|unstable)/user_directory/search$"),
];

#[cfg(test)]
mod tests {
    use super::super::pattern::Pattern;
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in WorkerRole::WORKERS {
            assert_eq!(role.as_str().parse::<WorkerRole>(), Ok(role));
            assert_eq!(role.to_string(), role.as_str());
        }
        assert!("main".parse::<WorkerRole>().is_err());
        assert!("Synchrotron".parse::<WorkerRole>().is_err());
        assert!("generic_worker".parse::<WorkerRole>().is_err());
        let all = RoleSet::all();
        assert!(WorkerRole::WORKERS.iter().all(|&r| all.contains(r)));
        assert!(!all.contains(WorkerRole::Main));
    }

    #[test]
    fn every_pattern_compiles() {
        for e in ENDPOINTS {
            if let Err(err) = Pattern::compile(e.pattern) {
                panic!("{}: {err}", e.pattern);
            }
        }
    }

    #[test]
    fn precedence_is_by_role_block() {
        fn rank(e: &Endpoint) -> usize {
            if e.role.is_stream_writer() || e.group == S_QUARANTINE {
                0
            } else {
                match e.role {
                    MediaRepository => 1,
                    Synchrotron => 2,
                    EventCreator => 3,
                    FederationInbound => 4,
                    _ => 5,
                }
            }
        }
        let ranks: Vec<usize> = ENDPOINTS.iter().map(rank).collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    }

    #[test]
    fn fallbacks_resolve_to_configured_roles() {
        let set: RoleSet = [ClientReader, Synchrotron].into_iter().collect();
        assert_eq!(set.resolve(UserDirectory), Some(ClientReader));
        assert_eq!(set.resolve(InitialSynchrotron), Some(Synchrotron));
        assert_eq!(set.resolve(Sso), None);
        assert_eq!(set.resolve(FederationInbound), None);
        let set: RoleSet = [FederationReader].into_iter().collect();
        assert_eq!(set.resolve(FederationInbound), Some(FederationReader));
        // GET-only lines are exactly the five groups the document lists.
        let get_only: Vec<&str> = ENDPOINTS
            .iter()
            .filter(|e| e.get_only)
            .map(|e| e.pattern)
            .collect();
        assert_eq!(get_only.len(), 5);
        assert!(ENDPOINTS
            .iter()
            .filter(|e| e.get_only)
            .all(|e| e.role == ClientReader));
    }
}
