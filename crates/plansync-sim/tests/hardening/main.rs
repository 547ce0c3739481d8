//! The simulators' defences against hostile or absurd input, each through the public surface:
//! a simulator started on a real loopback socket and a raw HTTP/1.1 request, as any client
//! (or a local web page) would send it.

mod anaplan;
mod crm;
mod http;
