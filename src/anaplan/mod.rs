//! The production Anaplan client (auth, rate limit, transactional and bulk APIs). Filled by issue 3.
