//! Fixture trees for the readers' unit tests: a fake /proc or filesystem root in a temporary
//! directory.
use std::fs;
use std::path::Path;

/// Writes `contents` to `root/rel`, making the directories on the way.
pub fn write(root: &Path, rel: &str, contents: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}
