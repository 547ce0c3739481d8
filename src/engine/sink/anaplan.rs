//! The Anaplan sink (being built).
