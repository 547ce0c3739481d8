//! The change-data-capture listener.
