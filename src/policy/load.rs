//! Loading policy documents from files and directories.
// TEMPORARY shim
pub fn load_paths(_paths: &[std::path::PathBuf]) -> Result<Vec<super::CompiledPolicy>, String> {
    Ok(Vec::new())
}
