//! Folders that hold what people asked and what their documents say are their owner's
//! alone. Lore creates its folders 0700 and its files 0600 (`memory::create_private_dir`,
//! `memory::write_atomically`); this module deals with folders that already exist open to
//! group or others:
//! - Lore's own folders (`state_dir/conversations`, `state_dir/web`) are tightened to 0700:
//!   nothing but Lore reads them, and an older version (or a hand-made folder) may have
//!   left them open.
//! - The folders the config names (`data_dir`, `state_dir`) are left as they are, with a
//!   warning that says how to close them: their owner may share them on purpose (a backup
//!   group), and Lore does not override that.

use std::path::Path;

/// Tightens `dir` to 0700 when it exists and group or others may use it, and says so in
/// the log (a folder it cannot change is only reported: that stops nothing). Returns
/// whether it changed anything.
pub fn tighten(dir: &Path) -> bool {
    let Some(mode) = open_mode(dir) else { return false };
    let mode = format!("{mode:o}");
    match set_owner_only(dir) {
        Ok(()) => {
            tracing::warn!(folder = %dir.display(), mode, "made an existing folder owner-only (0700)");
            true
        }
        Err(error) => {
            tracing::warn!(folder = %dir.display(), mode, %error, "others on this machine may read this folder, and it cannot be made owner-only");
            false
        }
    }
}

/// Warns when `dir`, which the config's `key` names, exists and group or others may use it.
pub fn warn_if_shared(dir: &Path, key: &str) {
    if let Some(mode) = open_mode(dir) {
        tracing::warn!(
            key,
            folder = %dir.display(),
            mode = format!("{mode:o}"),
            "others on this machine may read this folder; `chmod 700 {}` makes it the owner's alone",
            dir.display()
        );
    }
}

/// The permission bits of `dir` when it is a folder group or others have any right to.
#[cfg(unix)]
fn open_mode(dir: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir).ok().filter(|m| m.is_dir())?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn open_mode(_: &Path) -> Option<u32> {
    None
}

#[cfg(unix)]
fn set_owner_only(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn set_owner_only(_: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn an_open_folder_of_lores_own_is_tightened_and_a_configured_one_only_reported() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("web");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(open_mode(&open), Some(0o755), "the warning's case");
        assert!(tighten(&open));
        assert_eq!(mode(&open), 0o700);
        assert!(!tighten(&open), "already owner-only");
        assert!(!tighten(&dir.path().join("missing")));
        assert_eq!(open_mode(&open), None);
    }
}
