//! Simulator of a Salesforce-style org (OAuth, REST, CDC streaming). Filled by issue 4.
