//! The real Limitador library (in-memory storage) behind a JSON-lines protocol, for the differential test.
//!
//! Each line on stdin is one JSON object; each answer is one JSON line on stdout:
//! - `{"op": "limits", "limits": [...]}`: configure the limits, as `GET /limits/{ns}` shows them -> `{"limits": n}`
//! - `{"op": "should_rate_limit", "namespace", "descriptors", "hits_addend"}`: Envoy's ShouldRateLimit (a
//!   RateLimitPolicy's check) -> `{"limited": bool}`
//! - `{"op": "check_rate_limit", "namespace", "descriptors"}`: Kuadrant's CheckRateLimit (a TokenRateLimitPolicy's
//!   check before the request) -> `{"limited": bool}`
//! - `{"op": "report", "namespace", "descriptors", "hits_addend"}`: Kuadrant's Report (the tokens after the
//!   response) -> `{"reported": n}`
//! - `{"op": "counters", "namespace"}`: the live counters, as `GET /counters/{ns}` -> `{"counters": [...]}`
//!
//! Each call is mapped to the library as limitador-server does (`envoy_rls/server.rs`,
//! `envoy_rls/kuadrant_service.rs`): a hits_addend of 0 counts as 1 in ShouldRateLimit and Report, and
//! CheckRateLimit checks a delta of 1 without updating anything.
use limitador::limit::{Context, Expression, Limit, Predicate};
use limitador::RateLimiter;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::{self, BufRead, Write};

fn strings(value: &Value, field: &str) -> Result<Vec<String>, String> {
    value[field]
        .as_array()
        .ok_or(format!("{field}: not a list"))?
        .iter()
        .map(|s| s.as_str().map(str::to_owned).ok_or(format!("{field}: not a string")))
        .collect()
}

fn limit(value: &Value) -> Result<Limit, String> {
    let conditions = strings(value, "conditions")?
        .into_iter()
        .map(|c| Predicate::parse(c).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let variables = strings(value, "variables")?
        .into_iter()
        .map(|v| Expression::parse(v).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let namespace = value["namespace"].as_str().ok_or("namespace: not a string")?;
    let max_value = value["max_value"].as_u64().ok_or("max_value: not a number")?;
    let seconds = value["seconds"].as_u64().ok_or("seconds: not a number")?;
    let mut limit = Limit::new(namespace, max_value, seconds, conditions, variables);
    if let Some(name) = value["name"].as_str() {
        limit.set_name(name.to_owned());
    }
    Ok(limit)
}

/// The request's descriptors as the `descriptors` list binding, as limitador-server builds it.
fn context(request: &Value) -> Result<Context<'static>, String> {
    let descriptors = request["descriptors"]
        .as_array()
        .ok_or("descriptors: not a list")?
        .iter()
        .map(|d| {
            d.as_object()
                .ok_or("descriptor: not an object")?
                .iter()
                .map(|(k, v)| Ok((k.clone(), v.as_str().ok_or("descriptor value: not a string")?.to_owned())))
                .collect::<Result<HashMap<String, String>, String>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut ctx = Context::default();
    ctx.list_binding("descriptors".to_owned(), descriptors);
    Ok(ctx)
}

fn hits_addend(request: &Value) -> u64 {
    match request["hits_addend"].as_u64().unwrap_or(0) {
        0 => 1,
        hits => hits,
    }
}

fn answer(limiter: &RateLimiter, request: &Value) -> Result<Value, String> {
    let namespace = request["namespace"].as_str().unwrap_or_default().into();
    match request["op"].as_str().unwrap_or_default() {
        "limits" => {
            let limits = request["limits"]
                .as_array()
                .ok_or("limits: not a list")?
                .iter()
                .map(limit)
                .collect::<Result<Vec<_>, _>>()?;
            let count = limits.len();
            limiter.configure_with(limits).map_err(|e| e.to_string())?;
            Ok(json!({"limits": count}))
        }
        "should_rate_limit" => {
            let result = limiter
                .check_rate_limited_and_update(&namespace, &context(request)?, hits_addend(request))
                .map_err(|e| e.to_string())?;
            Ok(json!({"limited": result.limited}))
        }
        "check_rate_limit" => {
            let result = limiter
                .is_rate_limited(&namespace, &context(request)?, 1)
                .map_err(|e| e.to_string())?;
            Ok(json!({"limited": result.limited}))
        }
        "report" => {
            let hits = hits_addend(request);
            limiter
                .update_counters(&namespace, &context(request)?, hits)
                .map_err(|e| e.to_string())?;
            Ok(json!({"reported": hits}))
        }
        "counters" => {
            let counters = limiter
                .get_counters(&namespace)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|c| {
                    let mut conditions: Vec<String> = c.limit().conditions().into_iter().collect();
                    conditions.sort();
                    let mut variables: Vec<String> = c.limit().variables().into_iter().collect();
                    variables.sort();
                    let set_variables: Map<String, Value> =
                        c.set_variables().iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                    json!({"name": c.limit().name(), "max_value": c.max_value(), "seconds": c.limit().seconds(),
                           "conditions": conditions, "variables": variables, "set_variables": set_variables,
                           "remaining": c.remaining(), "expires_in": c.expires_in().map(|d| d.as_secs_f64())})
                })
                .collect::<Vec<_>>();
            Ok(json!({"counters": counters}))
        }
        op => Err(format!("unknown op {op:?}")),
    }
}

fn main() {
    let limiter = RateLimiter::new(10_000);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for line in io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let reply = serde_json::from_str::<Value>(&line)
            .map_err(|e| e.to_string())
            .and_then(|request| answer(&limiter, &request))
            .unwrap_or_else(|error| json!({"error": error}));
        writeln!(out, "{reply}").expect("stdout");
        out.flush().expect("stdout");
    }
}
