//! The CRM sink (being built).
