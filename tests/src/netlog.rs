//! Reading a Chromium NetLog (`--log-net-log=FILE`): which TCP connections and HTTP/2
//! sessions the browser opened to one port, and which requests each session carried.
//!
//! The file is `{"constants": {...}, "events": [...]}`; event and source types are numbers
//! named in `constants.logEventTypes` / `constants.logSourceType`. A browser that was killed
//! leaves the file without its closing `]}`: then each event line is read on its own.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::Value;

/// One HTTP/2 session (one connection) Chromium opened.
#[derive(Debug, Clone, Default)]
pub struct H2Session {
    /// The NetLog source id.
    pub id: u64,
    /// The `HTTP2_SESSION` begin event's parameters (`host`, `proxy`).
    pub params: Value,
    /// `:path` of every `HTTP2_SESSION_SEND_HEADERS` (every request stream), in order.
    pub paths: Vec<String>,
    /// Stream ids of those streams.
    pub stream_ids: Vec<u64>,
}

/// One TCP connection Chromium opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConnection {
    /// Its local address, `127.0.0.1:<port>`.
    pub local: String,
    /// Whether it carried requests (`SOCKET_IN_USE`), as opposed to being opened and
    /// closed unused.
    pub used: bool,
    /// Why the socket pool closed it, if it says.
    pub closed: Option<String>,
}

/// The parts of a NetLog the tests look at.
#[derive(Debug, Clone)]
pub struct NetLog {
    events: Vec<Value>,
    event_types: BTreeMap<String, u64>,
    source_types: BTreeMap<String, u64>,
}

impl NetLog {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<NetLog, String> {
        let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        NetLog::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a whole NetLog, or a truncated one line by line.
    pub fn parse(text: &str) -> Result<NetLog, String> {
        let (constants, events) = match serde_json::from_str::<Value>(text) {
            Ok(mut all) => (
                all["constants"].take(),
                all["events"].as_array().cloned().unwrap_or_default(),
            ),
            Err(_) => {
                let mut constants = Value::Null;
                let mut events = Vec::new();
                for line in text.lines() {
                    let line = line.trim().trim_end_matches(',');
                    if let Some(rest) = line.strip_prefix("{\"constants\":") {
                        constants = serde_json::from_str(rest).unwrap_or(Value::Null);
                    } else if line.starts_with('{') {
                        if let Ok(v) = serde_json::from_str::<Value>(line) {
                            events.push(v);
                        }
                    }
                }
                (constants, events)
            }
        };
        let names = |key: &str| -> BTreeMap<String, u64> {
            constants[key]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let event_types = names("logEventTypes");
        let source_types = names("logSourceType");
        if event_types.is_empty() || source_types.is_empty() {
            return Err("no constants.logEventTypes / logSourceType: not a NetLog".into());
        }
        Ok(NetLog {
            events,
            event_types,
            source_types,
        })
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn events_of<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Value> + 'a {
        let ty = self.event_types.get(name).copied();
        self.events
            .iter()
            .filter(move |e| ty.is_some() && e["type"].as_u64() == ty)
    }

    fn source_is(&self, event: &Value, name: &str) -> bool {
        self.source_types.get(name).copied().is_some()
            && event["source"]["type"].as_u64() == self.source_types.get(name).copied()
    }

    /// The TCP connections that reached `remote` (`127.0.0.1:<port>`), in order. Chromium
    /// may race a second connection while the first is being set up and close it unused
    /// once the first turns out to be HTTP/2 ("Switching to HTTP2 session").
    pub fn tcp_connections_to(&self, remote: &str) -> Vec<TcpConnection> {
        self.events_of("TCP_CONNECT")
            .filter(|e| e["params"]["remote_address"].as_str() == Some(remote))
            .filter_map(|e| {
                let id = e["source"]["id"].as_u64()?;
                let local = e["params"]["local_address"].as_str()?.to_owned();
                let on_it = |name: &str| {
                    self.events_of(name)
                        .filter(|x| x["source"]["id"].as_u64() == Some(id))
                        .collect::<Vec<_>>()
                };
                let used = !on_it("SOCKET_IN_USE").is_empty();
                let closed = on_it("SOCKET_POOL_CLOSING_SOCKET")
                    .first()
                    .and_then(|x| x["params"]["reason"].as_str())
                    .map(str::to_owned);
                Some(TcpConnection {
                    local,
                    used,
                    closed,
                })
            })
            .collect()
    }

    /// The HTTP/2 sessions whose `host` parameter is `host_port` (`localhost:8443`), with
    /// the request streams each carried.
    pub fn h2_sessions(&self, host_port: &str) -> Vec<H2Session> {
        let mut sessions: Vec<H2Session> = self
            .events_of("HTTP2_SESSION")
            .filter(|e| self.source_is(e, "HTTP2_SESSION") && e["phase"].as_u64() == Some(1))
            .filter(|e| {
                e["params"]["host"]
                    .as_str()
                    .is_some_and(|h| h == host_port || h.ends_with(&format!("/{host_port}")))
            })
            .filter_map(|e| {
                Some(H2Session {
                    id: e["source"]["id"].as_u64()?,
                    params: e["params"].clone(),
                    ..H2Session::default()
                })
            })
            .collect();
        for e in self.events_of("HTTP2_SESSION_SEND_HEADERS") {
            let Some(id) = e["source"]["id"].as_u64() else {
                continue;
            };
            let Some(s) = sessions.iter_mut().find(|s| s.id == id) else {
                continue;
            };
            let path = e["params"]["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .find_map(|h| h.strip_prefix(":path: "))
                .unwrap_or("")
                .to_owned();
            s.paths.push(path);
            s.stream_ids
                .push(e["params"]["stream_id"].as_u64().unwrap_or_default());
        }
        sessions
    }

    /// The `host` of every HTTP/2 session in the log (to say what there was when the one
    /// looked for is missing).
    pub fn h2_session_hosts(&self) -> Vec<String> {
        self.events_of("HTTP2_SESSION")
            .filter(|e| e["phase"].as_u64() == Some(1))
            .map(|e| e["params"]["host"].to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"{"constants":{"logEventTypes":{"TCP_CONNECT":10,"SOCKET_IN_USE":11,"SOCKET_POOL_CLOSING_SOCKET":12,"HTTP2_SESSION":20,"HTTP2_SESSION_SEND_HEADERS":21},"logSourceType":{"SOCKET":1,"HTTP2_SESSION":2}},
"events": [
{"phase":1,"source":{"id":5,"type":1},"type":10,"params":{"address_list":["127.0.0.1:8443"]}},
{"phase":2,"source":{"id":5,"type":1},"type":10,"params":{"local_address":"127.0.0.1:40000","remote_address":"127.0.0.1:8443"}},
{"phase":1,"source":{"id":5,"type":1},"type":11,"params":{}},
{"phase":2,"source":{"id":6,"type":1},"type":10,"params":{"local_address":"127.0.0.1:40002","remote_address":"127.0.0.1:8443"}},
{"phase":0,"source":{"id":6,"type":1},"type":12,"params":{"reason":"Switching to HTTP2 session"}},
{"phase":1,"source":{"id":7,"type":2},"type":20,"params":{"host":"localhost:8443","proxy":"DIRECT"}},
{"phase":0,"source":{"id":7,"type":2},"type":21,"params":{"headers":[":method: GET",":path: /a"],"stream_id":1}},
{"phase":0,"source":{"id":7,"type":2},"type":21,"params":{"headers":[":method: GET",":path: /b?i=1"],"stream_id":3}},
{"phase":1,"source":{"id":9,"type":2},"type":20,"params":{"host":"other:443","proxy":"DIRECT"}},
{"phase":0,"source":{"id":9,"type":2},"type":21,"params":{"headers":[":path: /c"],"stream_id":1}}
]}"#;

    #[test]
    fn sessions_connections_and_streams_are_found() {
        let log = NetLog::parse(LOG).expect("parses");
        let conns = log.tcp_connections_to("127.0.0.1:8443");
        let want = [
            TcpConnection {
                local: "127.0.0.1:40000".into(),
                used: true,
                closed: None,
            },
            TcpConnection {
                local: "127.0.0.1:40002".into(),
                used: false,
                closed: Some("Switching to HTTP2 session".into()),
            },
        ];
        assert_eq!(conns, want);
        let s = log.h2_sessions("localhost:8443");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].paths, ["/a", "/b?i=1"]);
        assert_eq!(s[0].stream_ids, [1, 3]);
        assert_eq!(log.h2_session_hosts().len(), 2);
    }

    #[test]
    fn a_truncated_log_is_read_line_by_line() {
        let cut = &LOG[..LOG.rfind("{\"phase\":1,\"source\":{\"id\":9").unwrap()];
        let log = NetLog::parse(cut).expect("parses");
        assert_eq!(log.h2_sessions("localhost:8443")[0].paths.len(), 2);
        assert!(NetLog::parse("garbage").is_err());
    }
}
