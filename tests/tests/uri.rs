//! The request URI reaches the origin byte for byte (federation signatures cover it), and
//! path tricks aimed at `/_synapse/admin` are refused before they reach it.

use std::time::Duration;

use mxgate_e2e::*;

/// Targets that a normalising proxy would break (synapse#3294, #7099, #19294).
const CLIENT_TARGETS: &[&str] = &[
    "/_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/t1",
    "/_matrix/client/v3/rooms/!raw:example.org/messages?dir=b&from=t1-2_3&limit=10",
    "/_matrix/media/v3/download/example.org/abc%2Fdef",
    "/_matrix/client/v3/rooms/%21a%25b%3Aexample.org/state/m.room.name/",
    "/_matrix/client/v3/profile/%40alice%3Aexample.org//displayname",
    "/_matrix/client/v3/directory/room/%23room%3Aexample.org",
    "/_matrix/client/v3/search?q=a+b%20c&next_batch=x%2By",
    "/_matrix/client/v3/user/%40a%3Ab/filter?filter=%7B%22room%22%3A%7B%7D%7D",
    "/_matrix/client/v3/rooms/%21A%3aexample.org/event/%24Ev%2b%2F%3d",
    "/_matrix/client/versions?",
    "/_matrix/client/v3/login?redirectUrl=https%3A%2F%2Fapp.example%2F%3Fa%3Db",
];

const FEDERATION_TARGETS: &[&str] = &[
    "/_matrix/federation/v1/event/$abc%2Fdef",
    "/_matrix/federation/v1/event/$Abc+def/ghi=",
    "/_matrix/federation/v1/state_ids/%21room%3Aexample.org?event_id=%24ev%3Aexample.org",
    "/_matrix/federation/v2/send_join/%21r%3Aa.example/%24e%2F%25",
    "/_matrix/key/v2/server",
];

fn check(s: &Scene, role: Role, tls: bool, target: &str) {
    let before = s.origin.requests().len();
    let res = s.exchange(role, tls, &get(target, "localhost"));
    assert_eq!(res.status, 200, "{target} via {role:?} tls={tls}: {res:?}");
    let reqs = s.origin.wait_requests(before + 1, Duration::from_secs(2));
    assert!(reqs.len() > before, "{target}: the origin got nothing");
    let want = format!("GET {target} HTTP/1.1");
    assert_eq!(
        show(reqs[before].head.request_line(), 500),
        show(want.as_bytes(), 500),
        "request line at the origin via {role:?} tls={tls}"
    );
}

#[test]
fn request_target_reaches_origin_byte_exact() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for (role, tls) in CLIENT_LISTENERS {
            for target in CLIENT_TARGETS {
                check(&s, role, tls, target);
            }
        }
        for tls in [true, false] {
            for target in FEDERATION_TARGETS {
                check(&s, Role::Federation, tls, target);
            }
        }
    });
}

/// Dot segments and encoded slashes or letters that would turn into `/_synapse/admin` are
/// refused with 400 and never reach the origin.
#[test]
fn traversal_targets_rejected_with_400() {
    each_runtime(|rt| {
        let s = Scene::with(rt, |c| c.admin_allow(&["10.9.9.9/32"]));
        for (role, tls) in [
            (Role::Client, true),
            (Role::Client, false),
            (Role::Federation, false),
        ] {
            for target in [
                "/_matrix/../_synapse/admin/v1/users",
                "/_matrix/client/../../_synapse/admin/v1/users",
                "/_synapse%2Fadmin/v1/users",
                "/_synapse/%61dmin/v1/users",
            ] {
                let mark = s.origin.mark();
                let res = s.exchange(role, tls, &get(target, "localhost"));
                assert_eq!(res.status, 400, "{target} via {role:?} tls={tls}: {res:?}");
                s.origin.assert_untouched_since(mark, target);
            }
        }
    });
}
