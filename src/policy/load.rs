//! Loading policy documents from files and directories.
