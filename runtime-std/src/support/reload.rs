//! What a configuration reload keeps, the same in both runtimes: the new file is read and
//! validated exactly as `mxgate check` does ([`super::config::load`]); pools that did not
//! change keep their balancer (health flags, in-flight counts) and, in the runtimes, their
//! idle connections; listeners are matched by name and address.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use mxgate_core::config::AcmeSettings;
use mxgate_core::{Config, ListenerId, PoolId, UpstreamPool};

use super::config;
use super::net::{self, BindPlan};

/// How a reloaded configuration relates to the one it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// Per pool of the new configuration: the pool of the old one it continues unchanged.
    pub pools: Vec<Option<PoolId>>,
    /// The effective configurations are identical: nothing is to be moved.
    pub unchanged: bool,
}

/// Reads and validates `path` for a reload (exactly `mxgate check`'s loading).
pub fn load(path: &Path) -> anyhow::Result<Config> {
    config::load(Some(path))
}

/// Whether `new` is `old` unchanged: same name, backends, policy, limits and health
/// settings. Such a pool keeps its balancer, health state and idle connections.
pub fn same_pool(old: &UpstreamPool, new: &UpstreamPool) -> bool {
    old.name == new.name
        && old.backends == new.backends
        && old.max_idle_per_backend == new.max_idle_per_backend
        && old.idle_timeout == new.idle_timeout
        && old.role == new.role
        && old.response_timeout == new.response_timeout
        && old.health == new.health
        && old.balancer.policy() == new.balancer.policy()
}

/// Prepares `new` to replace `old`: every unchanged pool takes over the old pool's
/// balancer (so its health flags and in-flight counts go on), and says which. Under ACME
/// the HTTP-01 answers the running ACME client fills are kept (the new file's are empty).
pub fn carry_over(old: &Config, new: &mut Config) -> Carried {
    if let (Some(old), Some(new)) = (&old.acme, &mut new.acme) {
        new.http01 = old.http01.clone();
    }
    let unchanged =
        mxgate_core::config::render_effective(old) == mxgate_core::config::render_effective(new);
    let pools = new
        .pools
        .iter_mut()
        .map(|pool| {
            let (id, old_pool) = old
                .pools
                .iter()
                .enumerate()
                .find(|(_, o)| same_pool(o, pool))?;
            pool.balancer = old_pool.balancer.clone();
            Some(id)
        })
        .collect();
    Carried { pools, unchanged }
}

/// The first step of every reload, in both runtimes: refuses a `new` configuration whose
/// changes need a restart, carries unchanged pools' state over from `current`
/// ([`carry_over`]), and warns about settings that only a restart applies.
pub fn prepare(current: &Config, mut new: Config) -> anyhow::Result<(Arc<Config>, Carried)> {
    refuse_restart_only_changes(current, &new)?;
    let carried = carry_over(current, &mut new);
    warn_about_restart_only_settings(current, &new);
    Ok((Arc::new(new), carried))
}

/// Where a connection of listener `listener` of `old` belongs in `new`: the listener of the
/// same name, or `None` when the reload removed it (the connection is then drained).
pub fn listener_in(old: &Config, listener: ListenerId, new: &Config) -> Option<ListenerId> {
    let name = old.listeners.get(listener).map(|l| l.name.as_str())?;
    new.listeners.iter().position(|l| l.name == name)
}

/// A runtime's per-pool upstream state for the pools of a reloaded `config`: pool `p`
/// shares the state of old pool `kept[p]` (its idle connections and resolved addresses),
/// the others get `fresh(pool)`; every old state no longer used is passed to `retire`.
pub fn carry_pools<P>(
    old: &[Arc<P>],
    config: &Config,
    kept: &[Option<PoolId>],
    fresh: impl Fn(&UpstreamPool) -> P,
    retire: impl Fn(&P),
) -> Vec<Arc<P>> {
    let pools: Vec<Arc<P>> = config
        .pools
        .iter()
        .enumerate()
        .map(|(id, p)| match kept.get(id).copied().flatten() {
            Some(o) if o < old.len() => Arc::clone(&old[o]),
            _ => Arc::new(fresh(p)),
        })
        .collect();
    for o in old {
        if !pools.iter().any(|p| Arc::ptr_eq(p, o)) {
            retire(o);
        }
    }
    pools
}

/// The sockets `config` asks for that are not bound yet (`bound` holds the configured
/// addresses of those that are), and the bound ones it no longer asks for.
pub fn socket_changes(config: &Config, bound: &[SocketAddr]) -> (Vec<BindPlan>, Vec<SocketAddr>) {
    let plans = net::plan(config);
    let removed = bound
        .iter()
        .filter(|addr| !plans.iter().any(|p| p.addr == **addr))
        .copied()
        .collect();
    let added = plans
        .into_iter()
        .filter(|p| !bound.contains(&p.addr))
        .collect();
    (added, removed)
}

/// Refuses a reload that switches between certificates by ACME and configured files: the
/// ACME client (or its absence) is the running process's, so that takes a restart.
pub fn refuse_restart_only_changes(old: &Config, new: &Config) -> anyhow::Result<()> {
    match (&old.acme, &new.acme) {
        (None, Some(_)) => anyhow::bail!(
            "certificates would come by ACME now ([tls] names no cert and key), but this \
             process serves configured certificates: that switch takes a restart (and only \
             the `mxgate` binary runs ACME)"
        ),
        (Some(_), None) => anyhow::bail!(
            "[tls] cert and key are configured now, but this process obtains certificates by \
             ACME: that switch takes a restart"
        ),
        _ => Ok(()),
    }
}

/// Whether two `[acme]` settings ask for the same certificate from the same place.
fn same_acme(old: &AcmeSettings, new: &AcmeSettings) -> bool {
    old.names == new.names
        && old.email == new.email
        && old.directory == new.directory
        && old.ca_root == new.ca_root
        && old.state_dir == new.state_dir
        && old.challenges == new.challenges
}

/// Settings a running process cannot change: said, not silently ignored.
pub fn warn_about_restart_only_settings(old: &Config, new: &Config) {
    if let (Some(o), Some(n)) = (&old.acme, &new.acme) {
        if !same_acme(o, n) {
            tracing::warn!("reload: [acme] changes take effect at the next restart");
        }
    }
    let (o, n) = (&old.runtime, &new.runtime);
    if o.threads != n.threads
        || o.max_connections != n.max_connections
        || o.metrics_bind != n.metrics_bind
    {
        tracing::warn!(
            "reload: [runtime] threads, max_connections and metrics_bind take effect at the next restart"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use mxgate_core::config::parse_config;

    fn parse(text: &str) -> Config {
        parse_config(text, Path::new("t.toml")).unwrap()
    }

    const BASE: &str = r#"
server_name = "example.com"
homeserver = "http://127.0.0.1:8008"
[[listeners]]
name = "plain"
role = "client"
bind = ["127.0.0.1:1"]
[workers.media_repository]
backends = ["http://127.0.0.1:8088"]
"#;

    #[test]
    fn unchanged_pools_keep_their_balancer_and_changed_ones_do_not() {
        let old = parse(BASE);
        let mut same = parse(BASE);
        let carried = carry_over(&old, &mut same);
        assert!(carried.unchanged);
        assert_eq!(carried.pools, vec![Some(0), Some(1)]);
        for (o, n) in old.pools.iter().zip(&same.pools) {
            assert!(Arc::ptr_eq(&o.balancer, &n.balancer));
        }

        // A worker pool added before the others, a backend moved, a limit changed.
        let text = BASE
            .replace("8088", "8089")
            .replace(
                "[workers.media_repository]",
                "[workers.synchrotron]\nbackends = [\"http://127.0.0.1:8083\"]\n[workers.media_repository]",
            )
            + "[limits]\nmax_body = \"1MiB\"\n";
        let mut changed = parse(&text);
        let carried = carry_over(&old, &mut changed);
        assert!(!carried.unchanged);
        let names: Vec<&str> = changed.pools.iter().map(|p| p.name.as_str()).collect();
        let homeserver = names.iter().position(|n| *n == "homeserver").unwrap();
        for (id, pool) in changed.pools.iter().enumerate() {
            let expected = (id == homeserver).then_some(0);
            assert_eq!(carried.pools[id], expected, "{}", pool.name);
            assert_eq!(
                Arc::ptr_eq(&pool.balancer, &old.pools[0].balancer),
                id == homeserver
            );
        }
    }

    #[test]
    fn connections_follow_their_listener_by_name_or_drain() {
        let old = parse(BASE);
        let renamed = parse(&BASE.replace("name = \"plain\"", "name = \"other\""));
        let moved = parse(&BASE.replace("127.0.0.1:1", "127.0.0.1:2"));
        assert_eq!(
            listener_in(&old, 0, &moved),
            Some(0),
            "same name, new address"
        );
        assert_eq!(listener_in(&old, 0, &renamed), None, "removed: drained");
        assert_eq!(listener_in(&old, 7, &moved), None, "no such listener");
    }

    #[test]
    fn runtime_pool_state_is_shared_for_kept_pools_and_retired_for_the_rest() {
        let old = parse(BASE);
        let states: Vec<Arc<String>> = old.pools.iter().map(|p| Arc::new(p.name.clone())).collect();
        let mut new = parse(&BASE.replace("8088", "8089"));
        let carried = carry_over(&old, &mut new);
        let retired = std::cell::RefCell::new(Vec::new());
        let pools = carry_pools(
            &states,
            &new,
            &carried.pools,
            |p| format!("fresh {}", p.name),
            |s| retired.borrow_mut().push(s.clone()),
        );
        let homeserver = new
            .pools
            .iter()
            .position(|p| p.name == "homeserver")
            .unwrap();
        let media = 1 - homeserver;
        assert!(Arc::ptr_eq(&pools[homeserver], &states[0]), "kept: shared");
        assert_eq!(*pools[media], "fresh media_repository");
        assert_eq!(*retired.borrow(), ["media_repository".to_string()]);
    }

    #[test]
    fn sockets_are_bound_for_added_addresses_and_closed_for_removed_ones() {
        let config = parse(&BASE.replace(
            "bind = [\"127.0.0.1:1\"]",
            "bind = [\"127.0.0.1:1\", \"127.0.0.1:2\"]",
        ));
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let (added, removed) = socket_changes(&config, &[a("127.0.0.1:1"), a("127.0.0.1:3")]);
        let added: Vec<SocketAddr> = added.iter().map(|p| p.addr).collect();
        assert_eq!(added, [a("127.0.0.1:2")]);
        assert_eq!(removed, [a("127.0.0.1:3")]);
    }

    const ACME: &str = r#"
server_name = "example.com"
public_url = "https://matrix.example.com"
homeserver = "http://127.0.0.1:8008"
"#;

    #[test]
    fn acme_keeps_its_challenge_answers_and_switching_certificate_source_is_refused() {
        let old = parse(ACME);
        let mut new = parse(ACME);
        let (o, n) = (old.acme.as_ref().unwrap(), new.acme.as_ref().unwrap());
        assert!(!Arc::ptr_eq(&o.http01, &n.http01));
        carry_over(&old, &mut new);
        let (o, n) = (old.acme.as_ref().unwrap(), new.acme.as_ref().unwrap());
        assert!(Arc::ptr_eq(&o.http01, &n.http01));
        refuse_restart_only_changes(&old, &new).unwrap();

        let files = parse(&format!(
            "{ACME}[tls]\ncert = \"/etc/mxgate/c.pem\"\nkey = \"/etc/mxgate/k.pem\"\n"
        ));
        assert!(files.acme.is_none());
        let err = refuse_restart_only_changes(&old, &files).unwrap_err();
        assert!(err.to_string().contains("restart"), "{err}");
        let err = refuse_restart_only_changes(&files, &old).unwrap_err();
        assert!(err.to_string().contains("ACME"), "{err}");
    }
}
