//! The ownership verdict of a write.
