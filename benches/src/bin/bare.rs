//! The "bare hyper" reference: the same TLS setup as heartgate, answering every request
//! with a fixed JSON body and no work. `bare PORT CERT.pem KEY.pem`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: a benchmark tool

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&a[2])
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&a[3]).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a[1].parse::<u16>().unwrap()))
        .await
        .unwrap();
    println!("READY");
    let body = Bytes::from_static(
        br#"{"active":true,"client_id":"backend","scope":"system/Observation.rs"}"#,
    );
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let body = body.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = service_fn(move |_req| {
                let body = body.clone();
                async move {
                    let mut r = hyper::Response::new(Full::new(body));
                    r.headers_mut()
                        .insert("content-type", "application/json".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}
