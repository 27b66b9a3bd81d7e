//! Unit tests of both replay forms.

use std::time::Duration;

use super::*;

fn regions(codes: &[&str], except: Option<&str>) -> Pick {
    Pick::Regions {
        regions: codes.iter().map(|c| (*c).to_owned()).collect(),
        except: except.map(str::to_owned),
    }
}

#[test]
fn parses_instance_and_regions() {
    let replay = parse("instance=m123;state=abc", "m1").expect("valid");
    assert_eq!(replay.route.pick, Pick::Instance("m123".into()));
    assert_eq!(replay.route.by, By::Replay);
    assert_eq!(replay.state.as_deref(), Some("abc"));
    assert_eq!(replay.app, None);
    let replay = parse("region=\"iad,ams\"; elsewhere=true", "m1").expect("valid");
    assert_eq!(replay.route.pick, regions(&["iad", "ams"], Some("m1")));
    // The listed order is the order of preference.
    assert_eq!(
        replay.route.prefer,
        [regions(&["iad"], None), regions(&["ams"], None)]
    );
    assert!(parse("state=x", "m1").is_err());
    assert!(parse("garbage", "m1").is_err());
}

#[test]
fn parses_apps_and_elsewhere() {
    let replay = parse("app=Other;state=s", "m1").expect("valid");
    assert_eq!(replay.app.as_deref(), Some("other"));
    assert_eq!(replay.route.pick, Pick::Any);
    let replay = parse("app=other;region=iad", "m1").expect("valid");
    assert_eq!(replay.app.as_deref(), Some("other"));
    assert_eq!(replay.route.pick, regions(&["iad"], None));
    assert!(replay.route.prefer.is_empty());
    let replay = parse("elsewhere=true", "m1").expect("valid");
    assert_eq!(replay.route.pick, Pick::Other("m1".into()));
    assert!(parse("elsewhere=false", "m1").is_err());
    let error = parse("elsewhere=maybe", "m1").expect_err("not a bool");
    assert_eq!(
        error,
        "replay field elsewhere: \"maybe\" is not true or false"
    );
}

#[test]
fn parses_prefer_instance_timeout_fallback_and_any() {
    let replay = parse(
        "prefer_instance=m7;timeout=500ms;fallback=prefer_self",
        "m1",
    )
    .expect("valid");
    assert_eq!(replay.route.pick, Pick::Any);
    assert_eq!(replay.route.prefer, [Pick::Instance("m7".into())]);
    assert_eq!(replay.route.timeout, Some(Duration::from_millis(500)));
    assert_eq!(replay.fallback, Some(Fallback::PreferSelf));
    assert_eq!(replay.asked_instance.as_deref(), Some("m7"));
    let replay = parse("app=w;fallback=force_self;timeout=10s", "m1").expect("valid");
    assert_eq!(replay.fallback, Some(Fallback::ForceSelf));
    assert_eq!(replay.route.timeout, Some(Duration::from_secs(10)));
    let replay = parse("region=\"sjc,any\"", "m1").expect("valid");
    assert_eq!(replay.route.pick, Pick::Any);
    assert_eq!(replay.route.prefer, [regions(&["sjc"], None)]);
    let replay = parse("region=eu", "m1").expect("valid");
    assert!(
        matches!(&replay.route.pick, Pick::Regions { regions, .. } if regions.contains(&"fra".to_owned()))
    );
}

#[test]
fn bad_values_name_the_field_and_what_it_takes() {
    let error = parse("app=x;timeout=abc", "m1").expect_err("bad timeout");
    assert_eq!(
        error,
        "replay field timeout: \"abc\" is not a duration: use a number and ms, s or m \
         (e.g. 500ms, 10s)"
    );
    let error = parse("app=x;timeout=0s", "m1").expect_err("zero");
    assert!(error.contains("must be more than zero"), "{error}");
    let error = parse("app=x;fallback=maybe", "m1").expect_err("bad fallback");
    assert_eq!(
        error,
        "replay field fallback: \"maybe\" is not one of force_self, prefer_self"
    );
    let error = parse("app=x;color=red", "m1").expect_err("unknown");
    assert!(
        error.starts_with("replay field \"color\" is not supported: use app,"),
        "{error}"
    );
    let error = parse("instance=", "m1").expect_err("empty");
    assert_eq!(error, "replay field instance is empty");
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert!(parse_duration("10").is_err());
}

#[test]
fn parses_the_json_form_with_its_transform() {
    let body = br#"{"app": "api", "region": ["iad", "ord"], "prefer_instance": null,
        "state": "s", "elsewhere": false, "timeout": "2s", "fallback": "force_self",
        "transform": {"path": "/v2/x?y=1", "delete_headers": ["Cookie"],
            "set_headers": [{"name": "x-tenant", "value": "t1"}]}}"#;
    let replay = parse_json(body, "m1").expect("valid");
    assert_eq!(replay.app.as_deref(), Some("api"));
    assert_eq!(replay.route.pick, regions(&["iad", "ord"], None));
    assert_eq!(replay.route.timeout, Some(Duration::from_secs(2)));
    assert_eq!(replay.fallback, Some(Fallback::ForceSelf));
    assert_eq!(replay.state.as_deref(), Some("s"));
    let transform = &replay.transform;
    assert_eq!(
        transform.path.as_ref().map(|p| p.as_str()),
        Some("/v2/x?y=1")
    );
    assert_eq!(
        transform.delete_headers,
        [HeaderName::from_static("cookie")]
    );
    assert_eq!(transform.set_headers[0].0, "x-tenant");
    assert_eq!(transform.set_headers[0].1, "t1");
}

#[test]
fn the_json_form_refuses_what_it_does_not_know() {
    let error = parse_json(br#"{"app": "a", "colour": 1}"#, "m1").expect_err("unknown");
    assert!(
        error.starts_with("replay field \"colour\" is not supported"),
        "{error}"
    );
    let error = parse_json(br#"{"app": "a", "cache": {"ttl": 30}}"#, "m1").expect_err("cache");
    assert!(error.contains("replay caching is not supported"), "{error}");
    let error =
        parse_json(br#"{"app": "a", "transform": {"method": "GET"}}"#, "m1").expect_err("field");
    assert!(
        error.contains("\"transform.method\" is not supported"),
        "{error}"
    );
    let error = parse_json(br#"{"app": "a", "transform": {"path": "x"}}"#, "m1").expect_err("path");
    assert!(error.contains("must start with /"), "{error}");
    let error = parse_json(br#"{"app": "a", "elsewhere": "yes"}"#, "m1").expect_err("bool");
    assert!(error.contains("use true or false"), "{error}");
    let error = parse_json(br#"{"app": "a", "timeout": "soon"}"#, "m1").expect_err("timeout");
    assert!(
        error.starts_with("replay field timeout: \"soon\""),
        "{error}"
    );
    assert!(parse_json(b"[1]", "m1").is_err());
    assert!(parse_json(b"{", "m1").is_err());
}
