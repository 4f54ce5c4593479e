//! Scheduler decisions on hand-built histories, checked against the rules of the papers and
//! of the reference implementations (Ray's `AsyncHyperBandScheduler`, Li et al. 2020
//! Algorithm 2, Optuna's `HyperbandPruner` and `MedianPruner`).

use std::collections::BTreeMap;

use serde_json::json;
use tuner::scheduler::{AshaConfig, AshaMode, AshaScheduler, Fifo, HyperbandScheduler, MedianStopping};
use tuner::{Decision, Direction, History, Job, Outcome, Params, SamplerKind, Scheduler, SchedulerKind, SearchSpace, Study, TrialState, TrialView};

const CFG: AshaConfig = AshaConfig { min_resource: 1, max_resource: 27, reduction_factor: 3, extrapolate: false };

fn trial(number: u64, state: TrialState, reports: &[(u64, f64)]) -> TrialView {
    TrialView {
        number,
        params: Params::new(),
        state,
        value: None,
        intermediate: reports.iter().copied().collect::<BTreeMap<_, _>>(),
    }
}

fn cont(m: u64) -> Decision {
    Decision::Continue { next_milestone: Some(m) }
}

/// `others` at one rung plus the trial under test (number = others.len()) with `mine`.
fn with_rung(rung: u64, others: &[f64], mine: &[(u64, f64)]) -> Vec<TrialView> {
    let mut v: Vec<TrialView> =
        others.iter().enumerate().map(|(i, x)| trial(i as u64, TrialState::Pruned, &[(rung, *x)])).collect();
    v.push(trial(others.len() as u64, TrialState::Running, mine));
    v
}

// ---------------------------------------------------------------- ASHA, stopping form (Ray)

#[test]
fn asha_milestones_are_geometric_below_max() {
    assert_eq!(AshaScheduler::new(CFG, AshaMode::Stop).milestones(), &[1, 3, 9]);
    let c = AshaConfig { min_resource: 2, max_resource: 100, reduction_factor: 4, extrapolate: false };
    assert_eq!(AshaScheduler::new(c, AshaMode::Stop).milestones(), &[2, 8, 32]);
    assert_eq!(AshaScheduler::with_bracket(CFG, AshaMode::Stop, 1).milestones(), &[3, 9]);
}

#[test]
fn asha_stop_first_trial_at_a_rung_continues() {
    let s = AshaScheduler::new(CFG, AshaMode::Stop);
    let h = [trial(0, TrialState::Running, &[(1, 100.0)])];
    assert_eq!(s.on_report(&History::new(Direction::Minimize, &h), 0, 1, 100.0), cont(3));
}

/// Ray: cutoff = nanpercentile(rewards at the rung, (1 - 1/rf) * 100) with reward = -value for
/// minimisation; stop if reward < cutoff. With rung-1 values 0.1 ... 0.9 the cutoff in value
/// terms is the 33.3rd percentile = 0.3 + (2/3)*0.1 = 0.3667.
#[test]
fn asha_stop_cutoff_is_rays_interpolated_percentile() {
    let s = AshaScheduler::new(CFG, AshaMode::Stop);
    let vals: Vec<f64> = (1..=9).map(|i| i as f64 / 10.0).collect();
    for (mine, expect) in [(0.35, cont(3)), (0.366, cont(3)), (0.367, Decision::Stop), (0.9, Decision::Stop)] {
        let h = with_rung(1, &vals, &[(1, mine)]);
        assert_eq!(s.on_report(&History::new(Direction::Minimize, &h), 9, 1, mine), expect, "value {mine}");
    }
    // Maximising flips the order: the same values, with 0.85 now near the top, continue.
    let h = with_rung(1, &vals, &[(1, 0.85)]);
    assert_eq!(s.on_report(&History::new(Direction::Maximize, &h), 9, 1, 0.85), cont(3));
    let h = with_rung(1, &vals, &[(1, 0.5)]);
    assert_eq!(s.on_report(&History::new(Direction::Maximize, &h), 9, 1, 0.5), Decision::Stop);
}

#[test]
fn asha_stop_judges_once_per_rung_at_first_report_past_it() {
    let s = AshaScheduler::new(CFG, AshaMode::Stop);
    let vals = [0.1, 0.2, 0.3];
    // Between milestones nothing is judged, however bad the value.
    let h = with_rung(1, &vals, &[(1, 0.05), (2, 50.0)]);
    assert_eq!(s.on_report(&History::new(Direction::Minimize, &h), 3, 2, 50.0), cont(3));
    // A report at step 4 with none at 3 is judged at milestone 3 (against rung-3 values).
    let h = with_rung(3, &vals, &[(1, 0.0), (4, 0.5)]);
    assert_eq!(s.on_report(&History::new(Direction::Minimize, &h), 3, 4, 0.5), Decision::Stop);
    let h = with_rung(3, &vals, &[(1, 0.0), (4, 0.15)]);
    assert_eq!(s.on_report(&History::new(Direction::Minimize, &h), 3, 4, 0.15), cont(9));
    // A second report past the same milestone is not judged again.
    let h = with_rung(3, &vals, &[(1, 0.0), (4, 0.15), (5, 0.9)]);
    assert_eq!(s.on_report(&History::new(Direction::Minimize, &h), 3, 5, 0.9), cont(9));
}

/// A trial's rung value is its *first* report at or past the milestone, not its latest one.
#[test]
fn asha_stop_rung_value_is_first_report_past_milestone() {
    let s = AshaScheduler::new(CFG, AshaMode::Stop);
    let h = vec![trial(0, TrialState::Running, &[(1, 0.1), (2, 0.9)]), trial(1, TrialState::Running, &[(1, 0.5)])];
    assert_eq!(s.on_report(&History::new(Direction::Minimize, &h), 1, 1, 0.5), Decision::Stop);
}

#[test]
fn asha_stop_at_max_resource_and_nan_ranks_worst() {
    let s = AshaScheduler::new(CFG, AshaMode::Stop);
    let h = [trial(0, TrialState::Running, &[(27, 0.1)])];
    assert_eq!(s.on_report(&History::new(Direction::Minimize, &h), 0, 27, 0.1), Decision::Stop);
    let h = with_rung(1, &[0.1, 0.2], &[(1, f64::NAN)]);
    assert_eq!(s.on_report(&History::new(Direction::Minimize, &h), 2, 1, f64::NAN), Decision::Stop);
}

// ---------------------------------------------------------------- ASHA, promotion form (paper)

#[test]
fn asha_promote_pauses_at_every_rung() {
    let s = AshaScheduler::new(CFG, AshaMode::Promote);
    let h = [trial(0, TrialState::Running, &[(1, 0.3)])];
    assert_eq!(s.on_report(&History::new(Direction::Minimize, &h), 0, 1, 0.3), Decision::Pause);
    let h = [trial(0, TrialState::Running, &[(1, 0.3), (2, 0.2)])];
    assert_eq!(s.on_report(&History::new(Direction::Minimize, &h), 0, 2, 0.2), cont(3));
    let h = [trial(0, TrialState::Running, &[(1, 0.3), (3, 0.2)])];
    assert_eq!(s.on_report(&History::new(Direction::Minimize, &h), 0, 3, 0.2), Decision::Pause);
    let h = [trial(0, TrialState::Running, &[(1, 0.3), (3, 0.2), (9, 0.1), (27, 0.05)])];
    assert_eq!(s.on_report(&History::new(Direction::Minimize, &h), 0, 27, 0.05), Decision::Stop);
}

/// Algorithm 2: with 9 results at rung 1, the top floor(9/3) = 3 are promoted to rung 3, best
/// first, each once; a 4th is not.
#[test]
fn asha_promote_top_third_of_rung_best_first() {
    let s = AshaScheduler::new(CFG, AshaMode::Promote);
    let vals = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6];
    let mut h: Vec<TrialView> =
        vals.iter().enumerate().map(|(i, v)| trial(i as u64, TrialState::Paused, &[(1, *v)])).collect();
    let mut promoted = Vec::new();
    while let Some((n, until)) = s.promote(&History::new(Direction::Minimize, &h)) {
        assert_eq!(until, 3);
        promoted.push(n);
        h[n as usize].state = TrialState::Running; // resumed by a worker
    }
    assert_eq!(promoted, [1, 5, 3]);
    // 8 results: floor(8/3) = 2, so only two would have been promoted.
    let h8: Vec<TrialView> =
        vals[..8].iter().enumerate().map(|(i, v)| trial(i as u64, TrialState::Paused, &[(1, *v)])).collect();
    let mut h8 = h8;
    let mut n_prom = 0;
    while let Some((n, _)) = s.promote(&History::new(Direction::Minimize, &h8)) {
        h8[n as usize].state = TrialState::Running;
        n_prom += 1;
    }
    assert_eq!(n_prom, 2);
    // A new better result joins the top third and is promoted although three already were.
    h.push(trial(9, TrialState::Paused, &[(1, 0.05)]));
    assert_eq!(s.promote(&History::new(Direction::Minimize, &h)), Some((9, 3)));
}

/// `get_job` scans rungs from the top: a promotable trial at rung 3 goes before rung 1's.
#[test]
fn asha_promote_scans_higher_rungs_first_and_promotes_to_max() {
    let s = AshaScheduler::new(CFG, AshaMode::Promote);
    let mut h: Vec<TrialView> =
        (0..6).map(|i| trial(i, TrialState::Paused, &[(1, 0.5 + i as f64 / 100.0)])).collect();
    for (n, v) in [(6, 0.3), (7, 0.1), (8, 0.2)] {
        h.push(trial(n, TrialState::Paused, &[(1, 0.05), (3, v)]));
    }
    assert_eq!(s.promote(&History::new(Direction::Minimize, &h)), Some((7, 9)));
    // From the last milestone the promotion trains to the full resource.
    let h = vec![
        trial(0, TrialState::Paused, &[(1, 0.1), (3, 0.1), (9, 0.3)]),
        trial(1, TrialState::Paused, &[(1, 0.1), (3, 0.1), (9, 0.1)]),
        trial(2, TrialState::Paused, &[(1, 0.1), (3, 0.1), (9, 0.2)]),
    ];
    assert_eq!(s.promote(&History::new(Direction::Minimize, &h)), Some((1, 27)));
    // The stopping form never promotes.
    assert_eq!(AshaScheduler::new(CFG, AshaMode::Stop).promote(&History::new(Direction::Minimize, &h)), None);
}

/// The promotion form through `Study::next_job`: new trials until a rung has 3 results, then
/// the best is resumed from its checkpoint step.
#[test]
fn study_next_job_resumes_the_best_paused_trial() {
    let space = SearchSpace::from_json(&json!({"x": {"type": "float", "low": 0.0, "high": 1.0}})).unwrap();
    let mut st = Study::new(space, Direction::Minimize, 1, SamplerKind::Random.build(1, None), SchedulerKind::AshaPromote(CFG).build(1));
    for v in [0.3, 0.1, 0.2] {
        let Job::New { number, until, .. } = st.next_job() else { panic!("expected a new trial") };
        assert_eq!(until, Some(1));
        assert_eq!(st.report(number, 1, v).unwrap(), Decision::Pause);
    }
    assert_eq!(st.trials()[1].state, TrialState::Paused);
    // Reporting to a paused trial is refused until it is resumed.
    assert!(st.report(1, 2, 0.1).is_err());
    match st.next_job() {
        Job::Resume { number, from_step, until, .. } => assert_eq!((number, from_step, until), (1, 1, 3)),
        j => panic!("expected a resume, got {j:?}"),
    }
    assert!(matches!(st.next_job(), Job::New { number: 3, .. }));
    st.report(1, 3, 0.05).unwrap();
    st.tell(0, Outcome::Pruned).unwrap();
}

// ---------------------------------------------------------------- Hyperband

/// Optuna's allocation for min 1, max 27, rf 3: 4 brackets with budgets
/// ceil(4 * 3^s / (s + 1)) = 27, 12, 6, 4 for s = 3, 2, 1, 0, where bracket i has minimum
/// early-stopping rate i.
#[test]
fn hyperband_brackets_and_allocation() {
    let hb = HyperbandScheduler::new(CFG, AshaMode::Stop, 7);
    let ms: Vec<Vec<u64>> = hb.brackets().iter().map(|b| b.milestones().to_vec()).collect();
    assert_eq!(ms, vec![vec![1, 3, 9], vec![3, 9], vec![9], vec![]]);
    let mut counts = [0usize; 4];
    for n in 0..49_000 {
        counts[hb.bracket_of(n)] += 1;
    }
    for (c, b) in counts.iter().zip([27.0, 12.0, 6.0, 4.0]) {
        let share = *c as f64 / 49_000.0;
        assert!((share - b / 49.0).abs() < 0.01, "{counts:?}");
    }
    // The assignment is a function of (seed, number) only.
    assert_eq!(hb.bracket_of(123), HyperbandScheduler::new(CFG, AshaMode::Stop, 7).bracket_of(123));
}

#[test]
fn hyperband_brackets_only_see_their_own_trials() {
    let hb = HyperbandScheduler::new(CFG, AshaMode::Stop, 7);
    let hb_ref = &hb;
    let in_bracket = |b: usize| (0..).filter(move |n| hb_ref.bracket_of(*n) == b);
    let b2: Vec<u64> = in_bracket(2).take(2).collect();
    let b0 = in_bracket(0).next().unwrap();
    let mut h = vec![
        trial(b0, TrialState::Pruned, &[(9, 0.01)]),
        trial(b2[1], TrialState::Running, &[(9, 0.5)]),
    ];
    h.sort_by_key(|t| t.number);
    // Only a trial of another bracket has a better rung-9 value: first in its own bracket.
    assert_eq!(hb.on_report(&History::new(Direction::Minimize, &h), b2[1], 9, 0.5), Decision::Continue { next_milestone: Some(27) });
    h.push(trial(b2[0], TrialState::Pruned, &[(9, 0.02)]));
    h.sort_by_key(|t| t.number);
    assert_eq!(hb.on_report(&History::new(Direction::Minimize, &h), b2[1], 9, 0.5), Decision::Stop);
    // Bracket 2 has no milestone below 9: an early report is never judged.
    assert_eq!(hb.first_milestone(b2[1]), Some(9));
    // Bracket 3 never stops early.
    let b3 = in_bracket(3).next().unwrap();
    let mut h: Vec<TrialView> = (0..5).map(|i| trial(1000 + i, TrialState::Pruned, &[(9, 0.0)])).collect();
    h.insert(0, trial(b3, TrialState::Running, &[(9, 9.0)]));
    h.sort_by_key(|t| t.number);
    assert!(matches!(hb.on_report(&History::new(Direction::Minimize, &h), b3, 9, 9.0), Decision::Continue { .. }));
}

// ---------------------------------------------------------------- median stopping and FIFO

fn complete(number: u64, reports: &[(u64, f64)]) -> TrialView {
    let mut t = trial(number, TrialState::Complete, reports);
    t.value = reports.last().map(|r| r.1);
    t
}

#[test]
fn median_stops_below_the_median_of_completed_trials() {
    let m = MedianStopping { n_startup_trials: 5, n_warmup_steps: 2 };
    let mut h: Vec<TrialView> = (0..5).map(|i| complete(i, &[(1, 9.0), (3, 1.0 + i as f64)])).collect();
    let cont = Decision::Continue { next_milestone: None };
    // Median at step 3 is 3.0; the trial's best value so far is what is compared.
    h.push(trial(5, TrialState::Running, &[(3, 3.5)]));
    assert_eq!(m.on_report(&History::new(Direction::Minimize, &h), 5, 3, 3.5), Decision::Stop);
    h[5] = trial(5, TrialState::Running, &[(1, 2.0), (3, 3.5)]);
    assert_eq!(m.on_report(&History::new(Direction::Minimize, &h), 5, 3, 3.5), cont);
    h[5] = trial(5, TrialState::Running, &[(3, 2.9)]);
    assert_eq!(m.on_report(&History::new(Direction::Minimize, &h), 5, 3, 2.9), cont);
    // Warm-up steps are never judged.
    h[5] = trial(5, TrialState::Running, &[(1, 100.0)]);
    assert_eq!(m.on_report(&History::new(Direction::Minimize, &h), 5, 1, 100.0), cont);
    // Fewer completed trials than n_startup_trials: nothing is stopped.
    h.remove(0);
    h[4] = trial(5, TrialState::Running, &[(3, 100.0)]);
    assert_eq!(m.on_report(&History::new(Direction::Minimize, &h), 5, 3, 100.0), cont);
}

#[test]
fn fifo_never_stops() {
    let h = [trial(0, TrialState::Running, &[(1, f64::INFINITY)])];
    assert_eq!(Fifo.on_report(&History::new(Direction::Minimize, &h), 0, 1, f64::INFINITY), Decision::Continue { next_milestone: None });
}

// ---------------------------------------------------------------- study bookkeeping

#[test]
fn study_rejects_reports_and_tells_that_do_not_fit_the_trial_state() {
    let space = SearchSpace::from_json(&json!({"x": {"type": "float", "low": 0.0, "high": 1.0}})).unwrap();
    let mut st = Study::new(space, Direction::Minimize, 1, SamplerKind::Random.build(1, None), Box::new(Fifo));
    let (n, _) = st.ask();
    assert_eq!(st.report(7, 1, 0.5), Err(tuner::TellError::UnknownTrial(7)));
    assert!(st.report(n, 1, 0.5).is_ok());
    st.tell(n, Outcome::Complete(0.5)).unwrap();
    assert_eq!(st.tell(n, Outcome::Complete(0.4)), Err(tuner::TellError::AlreadyFinished(n)));
    assert_eq!(st.report(n, 2, 0.4), Err(tuner::TellError::AlreadyFinished(n)));
    // NaN is recorded as failed, infinities as values.
    let (a, _) = st.ask();
    st.tell(a, Outcome::Complete(f64::NAN)).unwrap();
    let (b, _) = st.ask();
    st.tell(b, Outcome::Complete(f64::INFINITY)).unwrap();
    assert_eq!(st.trials()[a as usize].state, TrialState::Failed);
    assert_eq!(st.trials()[b as usize].value, Some(f64::INFINITY));
    assert_eq!(st.best().unwrap().number, n);
}

/// Hyperband over promotion ASHA: each bracket promotes among its own paused trials only.
#[test]
fn hyperband_promote_promotes_within_a_bracket() {
    let hb = HyperbandScheduler::new(CFG, AshaMode::Promote, 3);
    let b0: Vec<u64> = (0..).filter(|n| hb.bracket_of(*n) == 0).take(3).collect();
    let other = (0..).find(|n| hb.bracket_of(*n) == 1).unwrap();
    let mut h: Vec<TrialView> = b0.iter().zip([0.3, 0.1, 0.2]).map(|(n, v)| trial(*n, TrialState::Paused, &[(1, v)])).collect();
    h.push(trial(other, TrialState::Paused, &[(3, 0.0)]));
    h.sort_by_key(|t| t.number);
    // Bracket 0 has 3 results at rung 1 -> its best goes to 3; bracket 1's single result at
    // its first rung (3) is not enough for a promotion.
    assert_eq!(hb.promote(&History::new(Direction::Minimize, &h)), Some((b0[1], 3)));
    assert_eq!(hb.on_report(&History::new(Direction::Minimize, &h), other, 3, 0.0), Decision::Pause);
}

// ---------------------------------------------------------------- learning-curve extrapolation

/// Three fast learners that have flattened near 0.30-0.34 and a late bloomer: worse at the
/// rung (27), still falling steeply, heading for ~0.19 at 81.
fn fast(asymptote: f64) -> impl Fn(f64) -> f64 {
    move |t| asymptote + 0.6 * (1.0 + t / 2.0).powi(-2)
}
fn late_bloomer(t: f64) -> f64 {
    0.10 + 0.8 * (1.0 + t / 40.0).powi(-2)
}
fn reports(f: impl Fn(f64) -> f64, until: u64) -> Vec<(u64, f64)> {
    (1..=until).map(|t| (t, f(t as f64))).collect()
}

const CFG81: AshaConfig = AshaConfig { min_resource: 1, max_resource: 81, reduction_factor: 3, extrapolate: false };
const CFG81_LCX: AshaConfig = AshaConfig { extrapolate: true, ..CFG81 };

#[test]
fn extrapolating_asha_keeps_a_late_bloomer_that_plain_asha_stops() {
    assert!(late_bloomer(27.0) > fast(0.34)(27.0) && late_bloomer(81.0) < fast(0.30)(81.0));
    let mut h: Vec<TrialView> =
        [0.30, 0.32, 0.34].iter().enumerate().map(|(i, a)| trial(i as u64, TrialState::Paused, &reports(fast(*a), 27))).collect();
    h.push(trial(3, TrialState::Running, &reports(late_bloomer, 27)));
    let at27 = late_bloomer(27.0);
    for direction in [Direction::Minimize, Direction::Maximize] {
        // Maximising the negated curves is the same problem.
        let h: Vec<TrialView> = match direction {
            Direction::Minimize => h.clone(),
            Direction::Maximize => h
                .iter()
                .map(|t| TrialView { intermediate: t.intermediate.iter().map(|(s, v)| (*s, -v)).collect(), ..t.clone() })
                .collect(),
        };
        let mine = if direction == Direction::Minimize { at27 } else { -at27 };
        let history = History::new(direction, &h);
        let plain = AshaScheduler::new(CFG81, AshaMode::Stop);
        assert_eq!(plain.on_report(&history, 3, 27, mine), Decision::Stop, "{direction:?}");
        let lcx = AshaScheduler::new(CFG81_LCX, AshaMode::Stop);
        assert_eq!(lcx.on_report(&history, 3, 27, mine), cont(81), "{direction:?}");
        // Promotion form: of the four at rung 27, the top third (one) goes on to 81.
        let h_paused: Vec<TrialView> = h.iter().map(|t| TrialView { state: TrialState::Paused, ..t.clone() }).collect();
        let history = History::new(direction, &h_paused);
        assert_eq!(AshaScheduler::new(CFG81, AshaMode::Promote).promote(&history), Some((0, 81)), "{direction:?}");
        assert_eq!(AshaScheduler::new(CFG81_LCX, AshaMode::Promote).promote(&history), Some((3, 81)), "{direction:?}");
    }
}

#[test]
fn extrapolating_asha_judges_short_curves_by_their_value() {
    // At rung 3 a trial has 3 reports, too few to fit: both rules agree.
    let h = [
        trial(0, TrialState::Paused, &reports(fast(0.30), 3)),
        trial(1, TrialState::Paused, &reports(fast(0.32), 3)),
        trial(2, TrialState::Running, &reports(late_bloomer, 3)),
    ];
    let history = History::new(Direction::Minimize, &h);
    let mine = late_bloomer(3.0);
    assert_eq!(AshaScheduler::new(CFG81, AshaMode::Stop).on_report(&history, 2, 3, mine), Decision::Stop);
    assert_eq!(AshaScheduler::new(CFG81_LCX, AshaMode::Stop).on_report(&history, 2, 3, mine), Decision::Stop);
}
