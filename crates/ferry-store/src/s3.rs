//! `s3://bucket/prefix` through aws-sdk-s3, for AWS S3 and S3-compatible servers.
//!
//! Owns the mapping of store keys to S3 keys (`<prefix>/<key>`), the multipart upload behind
//! `put_stream` and the translation of S3 errors into [`StoreError`]. It must never leave a
//! partial object at a key, never hold more than two parts of a stream in memory, and never
//! put credentials (or an endpoint's userinfo) into a URL or message.
//!
//! Streams are uploaded as one `PutObject` when they fit in the first part, otherwise as a
//! multipart upload whose parts grow (see [`part_size`]) so that any object S3 accepts fits
//! under its 10,000-part limit. While one part uploads, the next is read from the body. A failed
//! upload, including a failed body, is aborted, and an upload abandoned by dropping the future is
//! aborted in the background.
//!
//! Every request has the connect and read timeouts of [`Network`]; the SDK's own retries are
//! off and [`S3Store::send`] retries what may succeed when tried again (timeouts, connection
//! errors, throttling, 5xx), `retries` times with a growing pause, so the error can say how
//! many tries it took. A body being read (`get_stream`) fails when the server sends nothing for
//! the read timeout. An abort is tried once: it runs after a failure and must not multiply the
//! time to report it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use ferry_core::config::Network;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::{
    BoxFut, ByteStream, ObjectMeta, ObjectStore, PARTIAL, PutMode, Result, ServerCopy, StoreError,
    StoreOptions,
};

const MIB: usize = 1024 * 1024;
/// S3's smallest part, except the last one.
const MIN_PART_SIZE: usize = 5 * MIB;
/// S3's largest part, and its largest `CopyObject`.
const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
const DEFAULT_PART_SIZE: usize = 8 * MIB;
/// S3's limit on the number of parts of one upload.
const MAX_PARTS: i32 = 10_000;
/// The part size doubles after every this many parts.
const PARTS_PER_SIZE: i32 = 1_000;

pub struct S3Store {
    client: Client,
    bucket: String,
    /// Without leading or trailing `/`; may be empty.
    prefix: String,
    first_part_size: usize,
    /// Which S3 service the client talks to (endpoint override or AWS region): two stores
    /// with the same one can copy between their buckets server-side.
    service: String,
    network: Network,
}

/// A request that failed for good, and how many times it was sent.
struct Failed<E> {
    err: SdkError<E>,
    attempts: u32,
}

impl S3Store {
    /// `rest` is the URL after `s3://`: `bucket` or `bucket/prefix`. Makes no request: the
    /// credential chain is consulted on first use.
    pub async fn open(rest: &str, options: &StoreOptions) -> Result<Self> {
        let bad = |reason: &str| StoreError::BadUrl {
            url: ferry_core::url::redact(&format!("s3://{rest}")),
            reason: reason.to_string(),
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("it names no bucket; use s3://bucket/prefix"));
        }
        if bucket.contains(['@', ':', '?', '#']) {
            return Err(bad(
                "a bucket name has no `@`, `:`, `?` or `#`; credentials come from the AWS \
                 credential chain (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...), never from the URL",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
            return Err(bad("the prefix has an empty, `.` or `..` part"));
        }

        let region = RegionProviderChain::first_try(options.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::from_static("us-east-1"));
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .load()
            .await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(options.network.connect_timeout)
                    .read_timeout(options.network.read_timeout)
                    .build(),
            )
            // `send` retries, and counts.
            .retry_config(RetryConfig::disabled());
        // The caller resolves the endpoint (the CLI: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL,
        // `[store] endpoint`); the SDK's shared config may still carry a profile's
        // endpoint_url. Either way it is an S3-compatible server, which rarely has per-bucket
        // DNS: path-style.
        if let Some(endpoint) = &options.endpoint {
            config = config.endpoint_url(endpoint).force_path_style(true);
        } else if shared.endpoint_url().is_some() {
            config = config.force_path_style(true);
        }
        let service = match (&options.endpoint, shared.endpoint_url()) {
            (Some(e), _) => e.clone(),
            (None, Some(e)) => e.to_string(),
            (None, None) => format!(
                "aws:{}",
                shared.region().map(|r| r.as_ref()).unwrap_or("us-east-1")
            ),
        };
        Ok(Self {
            service,
            network: options.network,
            client: Client::from_conf(config.build()),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            first_part_size: options
                .part_size
                .unwrap_or(DEFAULT_PART_SIZE)
                .max(MIN_PART_SIZE),
        })
    }

    /// The S3 key of a store key. Keys follow the file backend's rules so that a layout that
    /// works on one backend works on the other.
    fn s3_key(&self, key: &str) -> Result<String> {
        crate::check_key(key)?;
        Ok(self.join(key))
    }

    fn join(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// Where an object is, for error messages.
    fn where_(&self, s3_key: &str) -> String {
        format!("s3://{}/{s3_key}", self.bucket)
    }

    fn error<E>(&self, operation: &'static str, s3_key: &str, failed: &Failed<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        StoreError::S3 {
            operation,
            key: self.where_(s3_key),
            message: describe(&failed.err),
            attempts: failed.attempts,
        }
    }

    /// Sends a request built by `request`, again after a transient failure (a timeout, a
    /// connection error, throttling, a 5xx), at most `retries` more times with a growing pause.
    async fn send<T, E, Fut>(
        &self,
        operation: &'static str,
        s3_key: &str,
        mut request: impl FnMut() -> Fut,
    ) -> std::result::Result<T, Failed<E>>
    where
        Fut: Future<Output = std::result::Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut attempt = 1;
        loop {
            match request().await {
                Ok(out) => return Ok(out),
                Err(err) if attempt <= self.network.retries && is_transient(&err) => {
                    let pause = Network::backoff(attempt);
                    tracing::warn!(
                        operation,
                        key = %self.where_(s3_key),
                        attempt,
                        ?pause,
                        error = %describe(&err),
                        "S3 request failed; trying again"
                    );
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(err) => {
                    return Err(Failed {
                        err,
                        attempts: attempt,
                    });
                }
            }
        }
    }

    async fn put_object(&self, key: &str, s3_key: &str, data: Bytes, mode: PutMode) -> Result<()> {
        let result = self
            .send("PutObject", s3_key, || {
                let mut request = self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(s3_key)
                    .content_length(data.len() as i64)
                    .body(S3Body::from(data.clone()));
                if mode == PutMode::IfAbsent {
                    request = request.if_none_match("*");
                }
                request.send()
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            // 412: the key exists. 409 ConditionalRequestConflict: a concurrent conditional
            // write to the key is in flight and will win or has won; either way not ours.
            // (A retry of a create whose response was lost also lands here; the caller sees
            // AlreadyExists for its own object, which is the safe side.)
            Err(Failed { err: e, .. })
                if mode == PutMode::IfAbsent
                    && (status(&e) == Some(412)
                        || e.code() == Some("PreconditionFailed")
                        || e.code() == Some("ConditionalRequestConflict")) =>
            {
                Err(StoreError::AlreadyExists {
                    key: key.to_string(),
                })
            }
            Err(e) => Err(self.error("PutObject", s3_key, &e)),
        }
    }

    async fn put_stream_inner(&self, key: &str, mut body: ByteStream) -> Result<u64> {
        let s3_key = self.s3_key(key)?;
        let first_size = part_size(self.first_part_size, 1);
        let first = read_part(&mut body, first_size)
            .await
            .map_err(|e| StoreError::io(key, e))?;
        if first.len() < first_size {
            let n = first.len() as u64;
            self.put_object(key, &s3_key, first, PutMode::Overwrite)
                .await?;
            return Ok(n);
        }

        let created = self
            .send("CreateMultipartUpload", &s3_key, || {
                self.client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&s3_key)
                    .send()
            })
            .await
            .map_err(|e| self.error("CreateMultipartUpload", &s3_key, &e))?;
        let Some(upload_id) = created.upload_id() else {
            return Err(StoreError::S3 {
                operation: "CreateMultipartUpload",
                key: self.where_(&s3_key),
                message: "the response has no upload id".into(),
                attempts: 1,
            });
        };
        let mut pending = PendingUpload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: s3_key.clone(),
            upload_id: upload_id.to_string(),
            armed: true,
        };
        match self
            .upload_parts(key, &s3_key, upload_id, first, &mut body)
            .await
        {
            Ok(n) => {
                pending.armed = false;
                Ok(n)
            }
            Err(e) => {
                pending.abort().await;
                Err(e)
            }
        }
    }

    /// Uploads `first` and the rest of `body` as parts and completes the upload.
    async fn upload_parts(
        &self,
        key: &str,
        s3_key: &str,
        upload_id: &str,
        first: Bytes,
        body: &mut ByteStream,
    ) -> Result<u64> {
        let mut parts = Vec::new();
        let mut total = 0u64;
        let mut number = 1;
        let mut current = first;
        loop {
            let next_size = part_size(self.first_part_size, number + 1);
            // Upload this part while reading the next: two parts in memory at most.
            let (e_tag, next) = tokio::try_join!(
                self.upload_part(s3_key, upload_id, number, current.clone()),
                async {
                    read_part(body, next_size)
                        .await
                        .map_err(|e| StoreError::io(key, e))
                },
            )?;
            total += current.len() as u64;
            tracing::debug!(
                key,
                part = number,
                bytes = current.len(),
                total,
                "uploaded part"
            );
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .e_tag(e_tag)
                    .build(),
            );
            if next.is_empty() {
                break;
            }
            if number == MAX_PARTS {
                return Err(StoreError::S3 {
                    operation: "UploadPart",
                    key: self.where_(s3_key),
                    message: format!(
                        "the stream is larger than {total} bytes, the most {MAX_PARTS} parts \
                         starting at {} bytes hold; set a larger part size",
                        self.first_part_size
                    ),
                    attempts: 1,
                });
            }
            number += 1;
            current = next;
        }
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        self.send("CompleteMultipartUpload", s3_key, || {
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(s3_key)
                .upload_id(upload_id)
                .multipart_upload(completed.clone())
                .send()
        })
        .await
        .map_err(|e| self.error("CompleteMultipartUpload", s3_key, &e))?;
        Ok(total)
    }

    /// Uploads one part (retried like every request); returns its ETag.
    async fn upload_part(
        &self,
        s3_key: &str,
        upload_id: &str,
        number: i32,
        data: Bytes,
    ) -> Result<String> {
        let out = self
            .send("UploadPart", s3_key, || {
                self.client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(s3_key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_length(data.len() as i64)
                    .body(S3Body::from(data.clone()))
                    .send()
            })
            .await
            .map_err(|e| {
                let mut err = self.error("UploadPart", s3_key, &e);
                if let StoreError::S3 { message, .. } = &mut err {
                    *message = format!("part {number}: {message}");
                }
                err
            })?;
        out.e_tag()
            .map(str::to_string)
            .ok_or_else(|| StoreError::S3 {
                operation: "UploadPart",
                key: self.where_(s3_key),
                message: format!("the response for part {number} has no ETag"),
                attempts: 1,
            })
    }
}

impl ObjectStore for S3Store {
    fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn put_stream<'a>(&'a self, key: &'a str, body: ByteStream) -> BoxFut<'a, u64> {
        Box::pin(self.put_stream_inner(key, body))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn copy_verified<'a>(
        &'a self,
        src_key: &'a str,
        dest: &'a dyn ObjectStore,
        dest_key: &'a str,
        sha256: [u8; 32],
    ) -> BoxFut<'a, Option<ServerCopy>> {
        Box::pin(async move {
            let Some(dest) = dest.as_any().downcast_ref::<S3Store>() else {
                return Ok(None);
            };
            if dest.service != self.service {
                return Ok(None);
            }
            let size = match self.head(src_key).await? {
                Some(meta) => meta.size,
                None => {
                    return Err(StoreError::NotFound {
                        key: src_key.to_string(),
                    });
                }
            };
            // Above 5 GiB a copy takes several UploadPartCopy requests, and S3 then has no
            // full-object SHA-256 to prove the bytes with: stream instead.
            if size > MAX_PART_SIZE {
                return Ok(None);
            }
            let src_s3 = self.s3_key(src_key)?;
            let staging_key = format!("{dest_key}{PARTIAL}{:016x}", rand::random::<u64>());
            let staging = dest.s3_key(&staging_key)?;
            // The copy lands at a staging key first: S3 reports the copy's checksum only
            // after the object exists, and a wrong object must never appear at `dest_key`.
            let copied = self
                .send("CopyObject", &staging, || {
                    self.client
                        .copy_object()
                        .copy_source(copy_source(&self.bucket, &src_s3))
                        .bucket(&dest.bucket)
                        .key(&staging)
                        .checksum_algorithm(ChecksumAlgorithm::Sha256)
                        .send()
                })
                .await;
            let out = match copied {
                Ok(out) => out,
                // Buckets in different accounts or with policies that refuse the copy: the
                // streamed copy still works with the two sets of permissions.
                Err(Failed { err: e, .. })
                    if status(&e) == Some(403) || e.code() == Some("AccessDenied") =>
                {
                    tracing::info!(from = %self.where_(&src_s3), to = %dest.where_(&staging),
                        error = %describe(&e), "server-side copy refused; streaming instead");
                    return Ok(None);
                }
                Err(Failed { err: e, .. })
                    if e.code() == Some("NoSuchKey")
                        || e.as_service_error()
                            .is_some_and(|se| se.meta().code() == Some("NoSuchKey")) =>
                {
                    return Err(StoreError::NotFound {
                        key: src_key.to_string(),
                    });
                }
                Err(e) => return Err(self.error("CopyObject", &src_s3, &e)),
            };
            let result = async {
                let server_sum = out
                    .copy_object_result()
                    .and_then(|r| r.checksum_sha256())
                    .filter(|sum| !sum.contains('-'));
                let (actual, bytes_read) = match server_sum {
                    Some(sum) => {
                        let raw =
                            aws_smithy_types::base64::decode(sum).map_err(|e| StoreError::S3 {
                                operation: "CopyObject",
                                key: dest.where_(&staging),
                                message: format!("the server sent an unreadable checksum: {e}"),
                                attempts: 1,
                            })?;
                        (raw, 0)
                    }
                    // A server that computes no copy checksum (s3s-fs, older MinIO): read the
                    // copy back and hash it.
                    None => {
                        let mut body = dest.get_stream(&staging_key).await?;
                        let (sum, n) = crate::hash_stream(&mut body)
                            .await
                            .map_err(|e| StoreError::io(&staging_key, e))?;
                        (sum.to_vec(), n)
                    }
                };
                if actual != sha256 {
                    return Err(StoreError::ChecksumMismatch {
                        key: self.where_(&src_s3),
                        expected: crate::hex(&sha256),
                        actual: crate::hex(&actual),
                    });
                }
                let dest_s3 = dest.s3_key(dest_key)?;
                dest.send("CopyObject", &dest_s3, || {
                    dest.client
                        .copy_object()
                        .copy_source(copy_source(&dest.bucket, &staging))
                        .bucket(&dest.bucket)
                        .key(&dest_s3)
                        .send()
                })
                .await
                .map_err(|e| dest.error("CopyObject", &dest_s3, &e))?;
                Ok(ServerCopy { size, bytes_read })
            }
            .await;
            if let Err(e) = dest.delete(&staging_key).await {
                tracing::warn!(key = %dest.where_(&staging), error = %e,
                    "could not remove the staging copy; `ferry` never lists it, delete it by hand");
            }
            result.map(Some)
        })
    }

    fn put_bytes<'a>(&'a self, key: &'a str, bytes: Vec<u8>, mode: PutMode) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let s3_key = self.s3_key(key)?;
            self.put_object(key, &s3_key, Bytes::from(bytes), mode)
                .await
        })
    }

    fn get_stream<'a>(&'a self, key: &'a str) -> BoxFut<'a, ByteStream> {
        Box::pin(async move {
            let s3_key = self.s3_key(key)?;
            let got = self
                .send("GetObject", &s3_key, || {
                    self.client
                        .get_object()
                        .bucket(&self.bucket)
                        .key(&s3_key)
                        .send()
                })
                .await;
            match got {
                Ok(out) => Ok(Box::pin(IdleTimeout::new(
                    Box::pin(out.body.into_async_read()) as ByteStream,
                    self.network.read_timeout,
                    self.where_(&s3_key),
                )) as ByteStream),
                Err(Failed { err: e, .. })
                    if e.as_service_error().is_some_and(|se| se.is_no_such_key())
                        || e.code() == Some("NoSuchKey") =>
                {
                    Err(StoreError::NotFound {
                        key: key.to_string(),
                    })
                }
                Err(e) => Err(self.error("GetObject", &s3_key, &e)),
            }
        })
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFut<'a, Option<ObjectMeta>> {
        Box::pin(async move {
            let s3_key = self.s3_key(key)?;
            let headed = self
                .send("HeadObject", &s3_key, || {
                    self.client
                        .head_object()
                        .bucket(&self.bucket)
                        .key(&s3_key)
                        .send()
                })
                .await;
            match headed {
                Ok(out) => Ok(Some(ObjectMeta {
                    key: key.to_string(),
                    size: out.content_length().unwrap_or(0).max(0) as u64,
                    modified: out.last_modified().and_then(to_chrono),
                })),
                // A HEAD response has no body, so a missing bucket also looks like this; the
                // next write or read names the bucket in its error.
                Err(Failed { err: e, .. })
                    if e.as_service_error().is_some_and(|se| se.is_not_found())
                        || status(&e) == Some(404) =>
                {
                    Ok(None)
                }
                Err(e) => Err(self.error("HeadObject", &s3_key, &e)),
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFut<'a, Vec<ObjectMeta>> {
        Box::pin(async move {
            let full_prefix = if self.prefix.is_empty() {
                prefix.to_string()
            } else {
                format!("{}/{prefix}", self.prefix)
            };
            let strip = if self.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", self.prefix)
            };
            let mut out = Vec::new();
            // Page by page by hand (not the SDK's paginator) so that each page is retried.
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .send("ListObjectsV2", &full_prefix, || {
                        self.client
                            .list_objects_v2()
                            .bucket(&self.bucket)
                            .prefix(&full_prefix)
                            .set_continuation_token(token.clone())
                            .send()
                    })
                    .await
                    .map_err(|e| self.error("ListObjectsV2", &full_prefix, &e))?;
                for object in page.contents() {
                    let Some(key) = object.key().and_then(|k| k.strip_prefix(&strip)) else {
                        continue;
                    };
                    if key.contains(PARTIAL) {
                        continue;
                    }
                    out.push(ObjectMeta {
                        key: key.to_string(),
                        size: object.size().unwrap_or(0).max(0) as u64,
                        modified: object.last_modified().and_then(to_chrono),
                    });
                }
                match page.next_continuation_token() {
                    Some(next) if page.is_truncated() == Some(true) => {
                        token = Some(next.to_string())
                    }
                    _ => break,
                }
            }
            // S3 lists in UTF-8 byte order already; other servers may not.
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let s3_key = self.s3_key(key)?;
            let deleted = self
                .send("DeleteObject", &s3_key, || {
                    self.client
                        .delete_object()
                        .bucket(&self.bucket)
                        .key(&s3_key)
                        .send()
                })
                .await;
            match deleted {
                Ok(_) => Ok(()),
                // S3 answers 204 for a missing key; some compatible servers answer 404.
                Err(Failed { err: e, .. }) if e.code() == Some("NoSuchKey") => Ok(()),
                Err(e) => Err(self.error("DeleteObject", &s3_key, &e)),
            }
        })
    }
}

/// A multipart upload that is aborted unless disarmed: explicitly with [`PendingUpload::abort`]
/// on error, or from `Drop` (in the background) when the upload's future is dropped. The abort
/// is one try, bounded by the client's timeouts.
struct PendingUpload {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl PendingUpload {
    fn request(
        &self,
    ) -> aws_sdk_s3::operation::abort_multipart_upload::builders::AbortMultipartUploadFluentBuilder
    {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
    }

    async fn abort(mut self) {
        self.armed = false;
        if let Err(e) = self.request().send().await {
            // The caller gets the error that caused the abort; this one only leaves parts
            // that a bucket lifecycle rule (AbortIncompleteMultipartUpload) removes.
            tracing::warn!(
                key = %format!("s3://{}/{}", self.bucket, self.key),
                upload_id = %self.upload_id,
                error = %describe(&e),
                "could not abort the S3 multipart upload"
            );
        }
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let request = self.request();
            runtime.spawn(async move {
                let _ = request.send().await;
            });
        }
    }
}

/// A body that fails with `TimedOut` when a read waits longer than `timeout` for data: the
/// SDK's read timeout ends when the response's first byte arrives, and a server that stalls
/// in the middle of a body would otherwise hang the reader.
struct IdleTimeout<R> {
    inner: R,
    timeout: Duration,
    /// Armed while a read is waiting; a caller that is slow to read again is not the server
    /// stalling.
    deadline: Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
    what: String,
}

impl<R> IdleTimeout<R> {
    fn new(inner: R, timeout: Duration, what: String) -> Self {
        IdleTimeout {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            waiting: false,
            what,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for IdleTimeout<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.waiting {
            let at = tokio::time::Instant::now() + this.timeout;
            this.deadline.as_mut().reset(at);
            this.waiting = true;
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.waiting = false;
                Poll::Ready(result)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the S3 server sent nothing for {:?} while {} was being read \
                         ([store] read_timeout)",
                        this.timeout, this.what
                    ),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// `x-amz-copy-source`: the bucket and the URL-encoded key.
fn copy_source(bucket: &str, s3_key: &str) -> String {
    let mut out = format!("{bucket}/");
    for b in s3_key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The size of part `number` (1-based): the first size (at least 5 MiB), doubled after every
/// 1,000 parts, at most 5 GiB. Parts 9,001-10,000 are 512 times the first, so 10,000 parts hold
/// 1,023,000 first-size parts: 7.8 TiB at the 8 MiB default (more than S3's 5 TiB object
/// limit) and 4.9 TiB at the 5 MiB minimum.
fn part_size(first: usize, number: i32) -> usize {
    let doublings = ((number.max(1) - 1) / PARTS_PER_SIZE).min(20) as u32;
    let size = (first.max(MIN_PART_SIZE) as u64)
        .saturating_mul(1 << doublings)
        .min(MAX_PART_SIZE);
    usize::try_from(size).unwrap_or(usize::MAX)
}

/// Reads until `size` bytes or the end of `body`; allocates exactly `size`.
async fn read_part(body: &mut ByteStream, size: usize) -> std::io::Result<Bytes> {
    let mut buf = Vec::with_capacity(size);
    while buf.len() < size {
        // `read_buf` fills only the spare capacity, so the buffer never grows past `size`.
        if body.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    Ok(Bytes::from(buf))
}

fn status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// Connection failures, timeouts, throttling and server errors: what may succeed if tried again.
fn is_transient<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => {
            matches!(status(err), Some(408 | 429 | 500..=599))
                || matches!(
                    err.code(),
                    Some("RequestTimeout" | "SlowDown" | "InternalError" | "ServiceUnavailable")
                )
        }
        _ => false,
    }
}

/// The service's code and message when it sent one, else the error's chain of causes
/// (connection refused, timeout, unparsable response, ...). Neither contains credentials:
/// requests are signed, not echoed. This is `DisplayErrorContext` without the `Debug` dump it
/// appends, which holds the raw HTTP response (headers and body) and buries the cause.
fn describe<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match (err, err.code()) {
        (SdkError::ServiceError(_), Some(code)) => {
            let mut out = code.to_string();
            if let Some(message) = err.message() {
                out.push_str(": ");
                out.push_str(message);
            }
            if let Some(status) = status(err) {
                out.push_str(&format!(" (HTTP {status})"));
            }
            out
        }
        _ => {
            let mut out = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                out.push_str(": ");
                out.push_str(&cause.to_string());
                source = cause.source();
            }
            out
        }
    }
}

fn to_chrono(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_any_s3_object_fits() {
        let total = |first: usize| -> u64 {
            (1..=MAX_PARTS)
                .map(|n| part_size(first, n) as u64)
                .sum::<u64>()
        };
        let tib = 1u64 << 40;
        assert!(
            total(DEFAULT_PART_SIZE) >= 5 * tib,
            "{}",
            total(DEFAULT_PART_SIZE)
        );
        assert!(total(MIN_PART_SIZE) > 4 * tib);
        assert_eq!(part_size(DEFAULT_PART_SIZE, 1), 8 * MIB);
        assert_eq!(part_size(DEFAULT_PART_SIZE, 1000), 8 * MIB);
        assert_eq!(part_size(DEFAULT_PART_SIZE, 1001), 16 * MIB);
        assert_eq!(part_size(DEFAULT_PART_SIZE, 10_000), 4096 * MIB);
        // Below the minimum is raised to it; nothing exceeds S3's largest part.
        assert_eq!(part_size(MIB, 1), MIN_PART_SIZE);
        assert_eq!(part_size(1 << 30, 10_000) as u64, MAX_PART_SIZE);
    }

    #[tokio::test]
    async fn read_part_fills_exactly_and_stops_at_the_end() {
        let data: Vec<u8> = (0..25u8).collect();
        let mut body: ByteStream = Box::pin(std::io::Cursor::new(data));
        assert_eq!(read_part(&mut body, 10).await.unwrap().len(), 10);
        assert_eq!(read_part(&mut body, 10).await.unwrap().len(), 10);
        assert_eq!(
            &read_part(&mut body, 10).await.unwrap()[..],
            &[20, 21, 22, 23, 24]
        );
        assert!(read_part(&mut body, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_body_that_stalls_times_out_but_a_slow_reader_does_not() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut body = IdleTimeout::new(rx, Duration::from_millis(300), "s3://b/k".into());
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"abc")
            .await
            .unwrap();
        // The reader waits longer than the timeout before reading: the data is there.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut buf = [0u8; 3];
        body.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"abc");
        // Now the server sends nothing more and keeps the connection open.
        let started = std::time::Instant::now();
        let err = body.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("s3://b/k"), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        drop(tx);
    }

    #[tokio::test]
    async fn urls_and_keys() {
        let options = StoreOptions {
            endpoint: Some("http://127.0.0.1:9".into()),
            region: Some("eu-west-1".into()),
            part_size: None,
            network: Network::DEFAULT,
        };
        let store = S3Store::open("bucket/some/prefix/", &options)
            .await
            .unwrap();
        assert_eq!(store.url(), "s3://bucket/some/prefix");
        assert_eq!(store.s3_key("a/b").unwrap(), "some/prefix/a/b");
        for key in ["", "/x", "a/../b", "a//b", "."] {
            assert!(store.s3_key(key).is_err(), "{key}");
        }
        let bare = S3Store::open("bucket", &options).await.unwrap();
        assert_eq!(bare.url(), "s3://bucket");
        assert_eq!(bare.s3_key("a").unwrap(), "a");
        for rest in ["", "/prefix", "key:secret@bucket/x", "b/a/../c"] {
            assert!(
                matches!(
                    S3Store::open(rest, &options).await,
                    Err(StoreError::BadUrl { .. })
                ),
                "{rest}"
            );
        }
        let Err(StoreError::BadUrl { url, .. }) =
            S3Store::open("key:secret@bucket/x", &options).await
        else {
            unreachable!()
        };
        assert!(!url.contains("secret"), "{url}");
    }
}
