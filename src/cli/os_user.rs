//! Who is running plansync, for `exceptions resolve` when `--by` is not given.

/// The login name: `$USER`, else `$USERNAME` (Windows), when set and not empty; else the
/// system's name for the process's user. `None` when none of them knows.
pub fn name() -> Option<String> {
    ["USER", "USERNAME"]
        .into_iter()
        .filter_map(|var| std::env::var(var).ok())
        .map(|name| name.trim().to_string())
        .find(|name| !name.is_empty())
        .or_else(system_name)
}

/// The passwd entry of the real uid, through the C library: that asks NSS, so users from
/// LDAP or sssd (common on shared machines, absent from /etc/passwd) are found too, and it
/// works in a cron job or container where no login set `$USER`.
#[cfg(unix)]
fn system_name() -> Option<String> {
    use std::ffi::CStr;

    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: passwd is plain data (integers and pointers), valid when zeroed.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is to a live local of the right type; `buf.len()` is the
        // buffer's true size, and the strings the entry points to live in `buf`.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            let bigger = buf.len() * 2;
            buf.resize(bigger, 0);
            continue;
        }
        if rc != 0 || found.is_null() || entry.pw_name.is_null() {
            return None;
        }
        // SAFETY: on success pw_name is a NUL-terminated string inside `buf`, still alive.
        let name = unsafe { CStr::from_ptr(entry.pw_name) };
        return name
            .to_str()
            .ok()
            .filter(|name| !name.is_empty())
            .map(str::to_string);
    }
}

#[cfg(not(unix))]
fn system_name() -> Option<String> {
    None
}
