//! CPU cost of `auto` asks late in a 100-trial study, measured in-process. Ignored by default
//! (a measurement, not a check); run with
//! `cargo test --release -p tuner --test timing -- --ignored --nocapture`.
//! CPU time comes from /proc/self/stat (Linux, 10 ms ticks), summed over many asks so that the
//! tick resolution does not matter and a loaded machine does not inflate the figure.

use serde_json::{json, Map, Value};
use tuner::scheduler::Fifo;
use tuner::{Direction, Outcome, Params, SamplerKind, SearchSpace, Study};

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("linux /proc");
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn hartmann6(p: &Params) -> f64 {
    const A: [[f64; 6]; 4] = [[10., 3., 17., 3.5, 1.7, 8.], [0.05, 10., 17., 0.1, 8., 14.], [3., 3.5, 1.7, 10., 17., 8.], [17., 8., 0.05, 10., 0.1, 14.]];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    let x: Vec<f64> = (0..6).map(|i| p[&format!("x{i}")].as_f64().unwrap()).collect();
    -(0..4).map(|i| ALPHA[i] * (-(0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum::<f64>()).exp()).sum::<f64>()
}

#[test]
#[ignore]
fn auto_ask_cpu_time_at_100_trials() {
    let mut m = Map::new();
    for i in 0..6 {
        m.insert(format!("x{i}"), json!({"type": "float", "low": 0.0, "high": 1.0}));
    }
    let space = SearchSpace::from_json(&Value::Object(m)).unwrap();
    let (mut all, mut last10) = (0.0, 0.0);
    let seeds = 20;
    for seed in 0..seeds {
        let mut st = Study::new(space.clone(), Direction::Minimize, seed, SamplerKind::Auto.build(seed, Some(100)), Box::new(Fifo));
        for i in 0..100 {
            let t0 = cpu_seconds();
            let (n, p) = st.ask();
            let dt = cpu_seconds() - t0;
            all += dt;
            if i >= 90 {
                last10 += dt;
            }
            st.tell(n, Outcome::Complete(hartmann6(&p))).unwrap();
        }
    }
    println!(
        "hartmann6, auto, {seeds} seeds x 100 trials: CPU {:.2} ms/ask over all trials, {:.2} ms/ask over trials 90-99",
        all * 1e3 / (seeds as f64 * 100.0),
        last10 * 1e3 / (seeds as f64 * 10.0)
    );
}
