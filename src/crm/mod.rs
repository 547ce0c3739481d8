//! The production CRM client (auth, query, writes, CDC listener). Filled by issue 4.
