//! Shared helpers of the broker integration tests: start the real `karst` binary on an
//! ephemeral port and talk raw Kafka protocol to it with kafka-protocol's client-side encoders.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use karst::protocol::codec;

/// Bound on how long any test waits for the node to answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A `karst node` process with its own data directory.
pub struct NodeProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl NodeProcess {
    /// Starts a node with a fresh data directory and extra `--set key=value` settings.
    pub fn start(settings: &[&str]) -> NodeProcess {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        let mut node = Self::start_in(&data_dir, settings);
        node._temp = Some(temp);
        node
    }

    /// Starts a node on `data_dir` (kept by the caller across restarts).
    pub fn start_in(data_dir: &Path, settings: &[&str]) -> NodeProcess {
        let mut args = Vec::new();
        for setting in settings {
            args.push("--set".to_string());
            args.push(setting.to_string());
        }
        Self::start_with_args(data_dir, &args)
    }

    /// Starts a node on `data_dir` with extra command-line arguments.
    pub fn start_with_args(data_dir: &Path, args: &[String]) -> NodeProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_karst"));
        command
            .arg("node")
            .arg("--listeners")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(args);
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning karst node");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        NodeProcess {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            _temp: None,
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let status = wait_with_timeout(&mut self.child, IO_TIMEOUT);
        status.and_then(|status| status.code())
    }

    /// kill -9.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw Kafka protocol connection.
pub struct Client {
    pub stream: TcpStream,
    next_correlation_id: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            next_correlation_id: 1,
        }
    }

    /// Sends one request without waiting for the answer; returns its correlation id.
    pub fn send(&mut self, api_key: ApiKey, version: i16, request: RequestKind) -> i32 {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("karst-test")));
        let mut out = BytesMut::new();
        codec::encode_request(&header, &request, &mut out).expect("encode request");
        self.stream.write_all(&out).expect("write request");
        correlation_id
    }

    /// Reads one response frame body; None if the connection was closed.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut prefix = [0u8; 4];
        if self.stream.read_exact(&mut prefix).is_err() {
            return None;
        }
        let size = i32::from_be_bytes(prefix) as usize;
        let mut body = vec![0u8; size];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    pub fn receive(&mut self, api_key: ApiKey, version: i16, correlation_id: i32) -> ResponseKind {
        let frame = self
            .read_frame()
            .expect("connection closed before the response");
        let (got, response) =
            codec::decode_response(api_key, version, frame).expect("decode response");
        assert_eq!(got, correlation_id, "responses come in request order");
        response
    }

    pub fn call(&mut self, api_key: ApiKey, version: i16, request: RequestKind) -> ResponseKind {
        let correlation_id = self.send(api_key, version, request);
        self.receive(api_key, version, correlation_id)
    }

    /// True if the server closed the connection (EOF) within the timeout.
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }

    pub fn write_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    pub fn api_versions(&mut self, version: i16) -> ApiVersionsResponse {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("karst-test"))
            .with_client_software_version(StrBytes::from_static_str("1"));
        match self.call(
            ApiKey::ApiVersions,
            version,
            RequestKind::ApiVersions(request),
        ) {
            ResponseKind::ApiVersions(response) => response,
            other => panic!("{other:?}"),
        }
    }

    pub fn create_topic(&mut self, name: &str, partitions: i32) -> i16 {
        self.create_topic_with(name, partitions, &[])
    }

    pub fn create_topic_with(
        &mut self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> i16 {
        let topic = create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(
                configs
                    .iter()
                    .map(|(key, value)| {
                        create_topics_request::CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(key.to_string()))
                            .with_value(Some(StrBytes::from_string(value.to_string())))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(5000);
        match self.call(ApiKey::CreateTopics, 4, RequestKind::CreateTopics(request)) {
            ResponseKind::CreateTopics(response) => response.topics[0].error_code,
            other => panic!("{other:?}"),
        }
    }

    pub fn metadata(&mut self, version: i16, topics: Option<&[&str]>) -> MetadataResponse {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|name| {
                        metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(true);
        match self.call(ApiKey::Metadata, version, RequestKind::Metadata(request)) {
            ResponseKind::Metadata(response) => response,
            other => panic!("{other:?}"),
        }
    }

    /// Produces `records` (one or more v2 batches) to one partition; returns (error, base offset).
    pub fn produce(
        &mut self,
        version: i16,
        acks: i16,
        topic: &str,
        partition: i32,
        records: Vec<u8>,
    ) -> (i16, i64) {
        let request = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(5000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(Bytes::from(records))),
                ])]);
        match self.call(ApiKey::Produce, version, RequestKind::Produce(request)) {
            ResponseKind::Produce(response) => {
                let partition = &response.responses[0].partition_responses[0];
                (partition.error_code, partition.base_offset)
            }
            other => panic!("{other:?}"),
        }
    }

    /// Fetches by name (v < 13) or topic id (v >= 13) from one partition.
    pub fn fetch(
        &mut self,
        version: i16,
        topic: &str,
        topic_id: uuid::Uuid,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
    ) -> fetch_response::PartitionData {
        let mut fetch_topic = fetch_request::FetchTopic::default().with_partitions(vec![
            fetch_request::FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20),
        ]);
        if version >= 13 {
            fetch_topic.topic_id = topic_id;
        } else {
            fetch_topic.topic = TopicName(StrBytes::from_string(topic.to_string()));
        }
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(50 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_topic]);
        match self.call(ApiKey::Fetch, version, RequestKind::Fetch(request)) {
            ResponseKind::Fetch(response) => {
                assert_eq!(response.error_code, 0);
                assert_eq!(response.session_id, 0, "fetch sessions are declined");
                response.responses[0].partitions[0].clone()
            }
            other => panic!("{other:?}"),
        }
    }

    /// ListOffsets v7 for one partition: (error, offset, timestamp).
    pub fn list_offset(&mut self, topic: &str, partition: i32, timestamp: i64) -> (i16, i64, i64) {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(timestamp),
                ])]);
        match self.call(ApiKey::ListOffsets, 7, RequestKind::ListOffsets(request)) {
            ResponseKind::ListOffsets(response) => {
                let partition = &response.topics[0].partitions[0];
                (partition.error_code, partition.offset, partition.timestamp)
            }
            other => panic!("{other:?}"),
        }
    }

    pub fn init_producer_id(&mut self) -> (i64, i16) {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        match self.call(
            ApiKey::InitProducerId,
            4,
            RequestKind::InitProducerId(request),
        ) {
            ResponseKind::InitProducerId(response) => {
                assert_eq!(response.error_code, 0);
                (response.producer_id.0, response.producer_epoch)
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The topic id Metadata reports for `topic`.
pub fn topic_id(client: &mut Client, topic: &str) -> uuid::Uuid {
    let metadata = client.metadata(12, Some(&[topic]));
    assert_eq!(metadata.topics[0].error_code, 0);
    metadata.topics[0].topic_id
}

/// Splits concatenated batches into (base offset, bytes from byte 8 on: everything but the
/// base offset, which the broker assigns).
pub fn batches(mut records: &[u8]) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    while !records.is_empty() {
        let header = karst::protocol::batch::validate(records).expect("valid stored batch");
        out.push((header.base_offset, records[8..header.total_size()].to_vec()));
        records = &records[header.total_size()..];
    }
    out
}
