//! Property tests: no input, however hostile, makes a decoder or the topic parser panic,
//! and every id and topic survives a round trip.

use hearth_protocol::*;
use proptest::prelude::*;

fn every_channel(task: TaskId) -> [UpChannel; 6] {
    [
        UpChannel::Heartbeat,
        UpChannel::Status,
        UpChannel::ConfigRequest,
        UpChannel::ConfigApplied,
        UpChannel::TaskEvent(task),
        UpChannel::TaskResult(task),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_up_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        for channel in every_channel(TaskId::new()) {
            let _ = UpMessage::decode(channel, &bytes);
        }
        let _ = decode::<ConfigDocument>(&bytes);
        let _ = decode::<TaskDispatch>(&bytes);
        let _ = decode::<CertificateRenewal>(&bytes);
    }

    #[test]
    fn json_shaped_garbage_never_panics(s in r#"\{("[a-z_]{1,12}":(-?[0-9]{1,25}(\.[0-9]{1,5})?|"[^"]{0,20}"|\[[0-9.,-]{0,30}\]|null|true),?){0,12}\}"#) {
        for channel in every_channel(TaskId::new()) {
            let _ = UpMessage::decode(channel, s.as_bytes());
        }
    }

    #[test]
    fn random_topics_never_panic(s in ".{0,300}") {
        let _ = s.parse::<Topic>();
    }

    #[test]
    fn ids_and_topics_round_trip(a in any::<u128>(), t in any::<u128>()) {
        let appliance = ApplianceId::from_uuid(uuid::Uuid::from_u128(a));
        let task = TaskId::from_uuid(uuid::Uuid::from_u128(t));
        prop_assert_eq!(appliance.to_string().parse::<ApplianceId>().ok(), Some(appliance));
        for channel in every_channel(task) {
            let topic = Topic::new(appliance, channel);
            prop_assert_eq!(topic.to_string().parse::<Topic>().ok(), Some(topic));
        }
    }
}
