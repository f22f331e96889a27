//! Records the git commit the binary is built from, for `chronos-server --version`
//! and the build info metric. Without git or a `.git` (a source tarball, a
//! container build context without it) the commit is `unknown`; the
//! `CHRONOS_BUILD_COMMIT` variable overrides both (e.g. set by a CI image build).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo::rerun-if-env-changed=CHRONOS_BUILD_COMMIT");
    let commit = std::env::var("CHRONOS_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    // Rebuild when HEAD moves: HEAD itself, the branch it points to, packed refs.
    for path in [
        git(&["rev-parse", "--git-path", "HEAD"]),
        git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git(&["rev-parse", "--git-path", &r])),
        git(&["rev-parse", "--git-path", "packed-refs"]),
    ]
    .into_iter()
    .flatten()
    {
        let path = std::path::Path::new(&path);
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            match std::env::var_os("CARGO_MANIFEST_DIR") {
                Some(dir) => std::path::Path::new(&dir).join(path),
                None => continue,
            }
        };
        if absolute.exists() {
            println!("cargo::rerun-if-changed={}", absolute.display());
        }
    }
    println!(
        "cargo::rustc-env=CHRONOS_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}
