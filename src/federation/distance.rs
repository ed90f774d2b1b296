//! How far each datacenter is, from the WAN pool's Vivaldi coordinates (no IO here).
//!
//! A datacenter's distance is the median of the estimated round-trip times from this server's
//! coordinate to those of its servers, as Consul computes it: this datacenter is at zero, one
//! without any coordinate is infinitely far, and equal distances keep the order of names.

use std::collections::BTreeMap;

use tribune_gossip::Coordinate;

/// The datacenters nearest first, names breaking ties. `by_datacenter` maps each known
/// datacenter to the coordinates of its servers (possibly none); `own` is this server's.
pub(crate) fn nearest_first(
    local: &str,
    own: Option<&Coordinate>,
    by_datacenter: &BTreeMap<String, Vec<Coordinate>>,
) -> Vec<String> {
    let mut ranked: Vec<(f64, &String)> = by_datacenter
        .iter()
        .map(|(dc, coordinates)| {
            let distance = if dc == local {
                0.0
            } else {
                own.and_then(|own| median_distance(own, coordinates))
                    .unwrap_or(f64::INFINITY)
            };
            (distance, dc)
        })
        .collect();
    // BTreeMap order is by name, and a stable sort keeps it among equals.
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<String> = ranked.into_iter().map(|(_, dc)| dc.clone()).collect();
    if !by_datacenter.contains_key(local) {
        out.insert(0, local.to_owned());
    }
    out
}

/// The median estimated RTT (seconds) from `own` to `others`, skipping incompatible or invalid
/// coordinates; `None` when none is usable.
fn median_distance(own: &Coordinate, others: &[Coordinate]) -> Option<f64> {
    let mut distances: Vec<f64> = others
        .iter()
        .filter(|c| c.validate(own.vec.len()).is_ok())
        .map(|c| own.distance_secs(c))
        .filter(|d| d.is_finite())
        .collect();
    if distances.is_empty() {
        return None;
    }
    distances.sort_by(f64::total_cmp);
    distances.get(distances.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(x: f64) -> Coordinate {
        let mut c = Coordinate::new(&tribune_gossip::CoordinateConfig::default());
        if let Some(first) = c.vec.first_mut() {
            *first = x;
        }
        c.height = 0.0;
        c.adjustment = 0.0;
        c
    }

    #[test]
    fn datacenters_sort_by_median_distance_then_name() {
        let own = at(0.0);
        let map = BTreeMap::from([
            ("dc1".to_string(), vec![at(0.0)]),
            ("far".to_string(), vec![at(0.5), at(0.05), at(0.6)]),
            ("near".to_string(), vec![at(0.02), at(0.9), at(0.03)]),
            ("blind".to_string(), vec![]),
            ("alsoblind".to_string(), vec![]),
        ]);
        assert_eq!(
            nearest_first("dc1", Some(&own), &map),
            ["dc1", "near", "far", "alsoblind", "blind"]
        );
        // Without a coordinate of its own, this server knows only that it is nearest itself.
        assert_eq!(
            nearest_first("dc1", None, &map),
            ["dc1", "alsoblind", "blind", "far", "near"]
        );
        assert_eq!(nearest_first("solo", Some(&own), &BTreeMap::new()), ["solo"]);
    }
}
