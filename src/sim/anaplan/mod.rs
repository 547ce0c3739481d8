//! Simulator of Anaplan (auth service, transactional and bulk APIs). Filled by issue 3.
