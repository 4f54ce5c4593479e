//! A page of more runs than SQLite takes parameters in one statement (32,766): every run of the
//! page still comes back with its own data, hydrated 10,000 runs a query.

mod common;

use common::Backend;
use tracker::store::experiments::ViewType;
use tracker::store::runs::NewRun;

#[tokio::test]
async fn a_page_of_more_runs_than_one_query_takes_is_fully_hydrated() {
    let db = common::open_db(Backend::Sqlite).await.expect("sqlite");
    let s = &db.store;
    let exp = s.create_experiment("big", None, &[]).await.unwrap();
    let total = 33_000;
    for i in 0..total {
        let run = NewRun { experiment_id: exp.clone(), user_id: "u".into(), run_name: Some(format!("r{i}")), start_time: Some(i), tags: vec![("i".into(), i.to_string())] };
        s.create_run(run).await.unwrap();
    }
    let page = s.search_runs(&[exp], &[], &[], ViewType::ActiveOnly, 50_000, None).await.unwrap();
    assert_eq!(page.runs.len(), total as usize);
    for run in &page.runs {
        let tag = run.data.tags.iter().find(|t| t.key == "i").expect("every run hydrated with its tags");
        assert_eq!(format!("r{}", tag.value), run.info.run_name);
    }
}
