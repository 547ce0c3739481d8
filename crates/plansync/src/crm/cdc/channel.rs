//! Change event channels and the objects they carry, named as the Streaming API names them:
//! a standard object's events on `/data/<Object>ChangeEvent`, a custom object's
//! (`Deal__c`) on `/data/Deal__ChangeEvent`, and every selected object's on
//! `/data/ChangeEvents`.

/// The channel of one object's change events: `Opportunity` → `/data/OpportunityChangeEvent`,
/// `Deal__c` → `/data/Deal__ChangeEvent`.
pub fn of_object(object: &str) -> String {
    match object.strip_suffix("__c") {
        Some(stem) => format!("/data/{stem}__ChangeEvent"),
        None => format!("/data/{object}ChangeEvent"),
    }
}

/// The object whose events a channel carries, or `None` for a channel of several objects
/// (`/data/ChangeEvents`, a custom channel) or one that is not a change event channel.
pub fn object_of(channel: &str) -> Option<String> {
    let entity = channel
        .strip_prefix("/data/")?
        .strip_suffix("ChangeEvent")?;
    if entity.is_empty() {
        return None;
    }
    Some(match entity.strip_suffix("__") {
        Some(stem) if !stem.is_empty() => format!("{stem}__c"),
        Some(_) => return None,
        None => entity.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_follow_the_streaming_api_naming_both_ways() {
        for (object, channel) in [
            ("Opportunity", "/data/OpportunityChangeEvent"),
            ("Deal__c", "/data/Deal__ChangeEvent"),
            ("Territory__c", "/data/Territory__ChangeEvent"),
        ] {
            assert_eq!(of_object(object), channel);
            assert_eq!(object_of(channel).as_deref(), Some(object));
        }
        for several in [
            "/data/ChangeEvents",
            "/event/Custom__e",
            "/data/__ChangeEvent",
            "",
        ] {
            assert_eq!(object_of(several), None, "{several}");
        }
    }
}
