//! The JSON body of a metric-history page, written point by point.
//!
//! A 100,000-point history is the largest response the server writes (8 MB). serde escapes four
//! field names and the metric's key again for every point, which took 17 ms of a 60 ms request;
//! here each distinct key is escaped once and the rest of a point is numbers. The bytes are
//! exactly serde's, which the tests below check.

use api::mlflow::Metric;
use serde::Serialize;

/// About 80 bytes a point, reserved at once instead of grown by doubling.
const BYTES_PER_POINT: usize = 96;

/// `{"metrics": [...], "next_page_token": "..."}`, with an empty list or a missing token left out
/// as serde's `skip_serializing_if` leaves them out.
pub(crate) fn history_body(metrics: &[Metric], next_page_token: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + BYTES_PER_POINT * metrics.len());
    out.push(b'{');
    if !metrics.is_empty() {
        out.extend_from_slice(b"\"metrics\":[");
        // `{"key":"<key>","value":` of the key the last point had.
        let mut head: Option<(&str, Vec<u8>)> = None;
        for (i, m) in metrics.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if m.dataset_name.is_some() || m.dataset_digest.is_some() || m.model_id.is_some() || m.run_id.is_some() {
                write_json(&mut out, m);
                continue;
            }
            let head = match &head {
                Some((key, bytes)) if *key == m.key => bytes,
                _ => {
                    let mut bytes = b"{\"key\":".to_vec();
                    write_json(&mut bytes, m.key.as_str());
                    bytes.extend_from_slice(b",\"value\":");
                    &head.insert((&m.key, bytes)).1
                }
            };
            out.extend_from_slice(head);
            api::mlflow::flex::ser_f64(&m.value, &mut serde_json::Serializer::new(&mut out)).expect("writing to a Vec cannot fail");
            out.extend_from_slice(b",\"timestamp\":");
            write_json(&mut out, &m.timestamp);
            out.extend_from_slice(b",\"step\":");
            write_json(&mut out, &m.step);
            out.push(b'}');
        }
        out.push(b']');
    }
    if let Some(token) = next_page_token {
        if !metrics.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"next_page_token\":");
        write_json(&mut out, token);
    }
    out.push(b'}');
    out
}

fn write_json(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    // Serializing strings, integers and a `Metric` into memory cannot fail.
    serde_json::to_writer(out, value).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct History<'a> {
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        metrics: &'a [Metric],
        #[serde(skip_serializing_if = "Option::is_none")]
        next_page_token: Option<&'a str>,
    }

    fn point(key: &str, value: f64, timestamp: i64, step: i64) -> Metric {
        Metric { key: key.into(), value, timestamp, step, dataset_name: None, dataset_digest: None, model_id: None, run_id: None }
    }

    #[test]
    fn bytes_equal_serdes_for_every_kind_of_point() {
        let odd_key = "손실 \"quoted\" \\ \n\u{1}";
        let mut tagged = point("loss", 0.5, 7, 8);
        tagged.dataset_name = Some("train".into());
        tagged.model_id = Some("m-1".into());
        let metrics = vec![
            point("loss", 0.25, 1_733_000_000_000, 0),
            point("loss", -1e-300, -5, i64::MIN),
            point("loss", f64::NAN, 0, i64::MAX),
            point("loss", f64::MAX, 1, 1),
            point("loss", f64::INFINITY, 1, 2),
            point("loss", f64::NEG_INFINITY, 1, 3),
            point(odd_key, 3.0, 2, 4),
            tagged,
            point("loss", 1.0 / 3.0, 3, 5),
        ];
        for (points, token) in [(&metrics[..], None), (&metrics[..], Some("dG9r\"en")), (&[][..], Some("t")), (&[][..], None), (&metrics[..1], None)] {
            let ours = history_body(points, token);
            let serde = serde_json::to_vec(&History { metrics: points, next_page_token: token }).unwrap();
            assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(serde).unwrap());
        }
    }
}
