//! The Debian package: its contents (`dpkg-deb -c`, the conffile), its systemd units
//! (`systemd-analyze verify` on the unpacked tree, and `systemd-analyze security` under a
//! bound), and the packaged binary checking the packaged configuration.
//!
//! The `.deb` is `MXGATE_DEB` when set (`.ci/run` builds the release package with
//! `cargo deb -p mxgate` and points this test at it); otherwise the test packages the
//! `mxgate` binary the end-to-end suite builds, with the same metadata
//! (`cargo deb --no-build --fast`, about 20 s), so `cargo test --workspace` checks the
//! packaging on every run without a release build.
//!
//! Its tools are provisioned like the other end-to-end tools (`mxgate_e2e::tools`):
//! cargo-deb at the pinned version (`cargo install`ed into `target/cargo-tools/` when the
//! one on this machine is missing or another version) and `systemd-analyze` (Debian's
//! `systemd`, unpacked into `target/debian-tools/` without root when not installed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mxgate_e2e::runtime::{binary, workspace_root};
use mxgate_e2e::tools::{self, Tool};

/// The cargo-deb version packages are built with (`.ci/run` builds the release one with
/// the same: keep in step).
const CARGO_DEB_VERSION: &str = "3.6.0";

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn require(tool: &str, fix: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "`{tool}` is missing; install it with: {fix}");
}

/// The `.deb` under test: `MXGATE_DEB`, or one built now from the e2e suite's binary.
fn package(out: &Path) -> PathBuf {
    if let Ok(deb) = std::env::var("MXGATE_DEB") {
        let deb = workspace_root().join(deb);
        assert!(
            deb.is_file(),
            "MXGATE_DEB: {} does not exist",
            deb.display()
        );
        return deb;
    }
    let cargo_deb = tools::cargo_tool("deb", CARGO_DEB_VERSION)
        .unwrap_or_else(|e| panic!("cargo-deb {CARGO_DEB_VERSION} is needed: {e}"));
    let bin = binary("mxgate").unwrap_or_else(|e| panic!("{e}"));
    // target/<dir>/mxgate: cargo-deb takes the binary of the profile that built it.
    let profile = match bin
        .parent()
        .and_then(Path::file_name)
        .and_then(|d| d.to_str())
    {
        Some("debug") => "dev".to_string(),
        Some(dir) => dir.to_string(),
        None => panic!("unexpected binary path {}", bin.display()),
    };
    let built = run(Command::new(&cargo_deb)
        .args([
            "deb",
            "-p",
            "mxgate",
            "--no-build",
            "--no-strip",
            "--fast",
            "-q",
        ])
        .args(["--profile", &profile, "-o"])
        .arg(out)
        .current_dir(workspace_root()));
    assert!(
        built.status.success(),
        "cargo deb failed: {}",
        text(&built.stderr)
    );
    let debs: Vec<PathBuf> = std::fs::read_dir(out)
        .expect("output dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "cargo deb wrote {debs:?}");
    debs[0].clone()
}

/// The unit directories of the systemd `analyze` belongs to: `<prefix>/lib/systemd/system`
/// for its `<prefix>/bin` (and `/lib` beside `/usr`: Debian 12 ships units there), those
/// that exist.
fn systemd_unit_dirs(analyze: &Tool) -> Vec<PathBuf> {
    let Some(prefix) = analyze.program.parent().and_then(Path::parent) else {
        return Vec::new();
    };
    let mut dirs = vec![prefix.join("lib/systemd/system")];
    if let Some(top) = prefix.parent() {
        dirs.push(top.join("lib/systemd/system"));
    }
    let mut found: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let real = dir.canonicalize();
        if let Ok(real) = real {
            if real.is_dir() && !found.contains(&real) {
                found.push(real);
            }
        }
    }
    found
}

/// The README's first TOML block: the short example the packaged file must contain.
fn readme_short_example() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README");
    let block = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has a ```toml block");
    block.lines().map(str::to_string).collect()
}

#[test]
fn debian_package_installs_a_checked_config_and_hardened_units() {
    require("dpkg-deb", "apt-get install -y dpkg");
    let analyze =
        tools::debian_tool("systemd", "systemd-analyze", &["--version"]).unwrap_or_else(|e| {
            panic!(
                "systemd-analyze is needed by this test and could not be provisioned: {e}\n\
                 Fix: apt-get install -y systemd"
            )
        });
    let dir = tempfile::tempdir().expect("temp dir");
    let deb = package(&dir.path().join("out"));

    // Contents.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    assert!(listing.status.success(), "{}", text(&listing.stderr));
    let listing = text(&listing.stdout);
    // Mode and owner of a path (`-rw-r--r-- 0/0 … ./etc/…`; tar writes `./` or not).
    let entry = |path: &str| {
        let line = listing
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .last()
                    .map(|p| p.trim_start_matches("./"))
                    == Some(path)
            })
            .unwrap_or_else(|| panic!("the package lacks /{path}:\n{listing}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        let owner = match fields[1] {
            "root/root" | "0/0" => "root",
            other => other,
        };
        format!("{} {owner}", fields[0])
    };
    assert_eq!(entry("usr/bin/mxgate"), "-rwxr-xr-x root");
    for path in [
        "etc/mxgate/mxgate.toml",
        "usr/lib/systemd/system/mxgate.service",
        "usr/lib/systemd/system/mxgate.socket",
        "usr/lib/sysusers.d/mxgate.conf",
        "usr/share/doc/mxgate/README.md",
        "usr/share/doc/mxgate/copyright",
    ] {
        assert_eq!(entry(path), "-rw-r--r-- root", "{path}");
    }

    // Control: the config is a conffile, the user is created on configure.
    let control = dir.path().join("control");
    let extracted = run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    assert!(extracted.status.success(), "{}", text(&extracted.stderr));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/mxgate/mxgate.toml");
    let postinst = std::fs::read_to_string(control.join("postinst")).expect("postinst");
    assert!(
        postinst.contains("systemd-sysusers mxgate.conf"),
        "{postinst}"
    );

    // The unpacked tree, with systemd's own units beside the package's (verify follows
    // After=/WantedBy= into them).
    let root = dir.path().join("root");
    let unpacked = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    assert!(unpacked.status.success(), "{}", text(&unpacked.stderr));
    let units = root.join("usr/lib/systemd/system");
    let system_units = systemd_unit_dirs(&analyze);
    assert!(
        !system_units.is_empty(),
        "no systemd unit directory beside {}",
        analyze.program.display()
    );
    for from in system_units {
        let copied = run(Command::new("cp")
            .arg("-rn")
            .arg(from.join("."))
            .arg(&units));
        assert!(copied.status.success(), "{}", text(&copied.stderr));
    }

    // The units are valid: no error and no warning (unknown keys and bad values are only
    // warnings to systemd, so any output fails).
    let verify = run(analyze
        .command()
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(["mxgate.service", "mxgate.socket"]));
    assert!(
        verify.status.success() && verify.stderr.is_empty() && verify.stdout.is_empty(),
        "systemd-analyze verify: {}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    // Hardened: systemd's own exposure score stays "OK" (at most 2.0 of 10).
    let security = run(analyze
        .command()
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg("mxgate.service"));
    assert!(
        security.status.success(),
        "systemd-analyze security: exposure above 2.0:\n{}{}",
        text(&security.stdout),
        text(&security.stderr)
    );
    let service = std::fs::read_to_string(units.join("mxgate.service")).expect("service");
    for line in [
        "Type=notify",
        "User=mxgate",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=mxgate",
        "ExecReload=/usr/bin/mxgate reload --config /etc/mxgate/mxgate.toml --pid $MAINPID",
    ] {
        assert!(
            service.lines().any(|l| l == line),
            "mxgate.service lacks {line}"
        );
    }

    // The packaged config is the README's short example, and the packaged binary accepts it.
    let config = root.join("etc/mxgate/mxgate.toml");
    let packaged = std::fs::read_to_string(&config).expect("packaged config");
    for line in readme_short_example() {
        assert!(
            packaged.lines().any(|l| l == line),
            "the packaged config lacks the README's line {line:?}"
        );
    }
    let check = run(Command::new(root.join("usr/bin/mxgate"))
        .args(["check", "--config"])
        .arg(&config));
    assert!(
        check.status.success(),
        "mxgate check on the packaged config: {}",
        text(&check.stderr)
    );
    let effective = text(&check.stdout);
    for derived in [
        "name = \"client\"",
        "bind = [\"[::]:443\"]",
        "name = \"federation\"",
        "bind = [\"[::]:8448\"]",
        "backends = [\"http://127.0.0.1:8008\"]",
    ] {
        assert!(
            effective.contains(derived),
            "{derived} not in:\n{effective}"
        );
    }
    // And the unit's own validation (quiet) passes too.
    let quiet = run(Command::new(root.join("usr/bin/mxgate"))
        .args(["check", "--quiet", "--config"])
        .arg(&config));
    assert!(quiet.status.success() && quiet.stdout.is_empty());
}
