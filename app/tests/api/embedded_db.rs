//! The embedded PostgreSQL of `cargo run`: initialised once, data kept across restarts.

use db::embedded::{EmbeddedOptions, EmbeddedPostgres};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

#[derive(diesel::QueryableByName)]
struct Note {
    #[diesel(sql_type = diesel::sql_types::Text)]
    body: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_server_keeps_its_data_across_restarts() {
    let data_dir =
        testkit::scratch_dir(&format!("shop-embedded-{}", uuid::Uuid::new_v4().simple()));
    let options = EmbeddedOptions {
        data_dir: data_dir.clone(),
        durable: true,
        port: None,
    };

    let first = {
        let options = options.clone();
        tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&options))
            .await
            .unwrap()
            .unwrap()
    };
    db::create_database(&first.url("postgres"), "shop")
        .await
        .unwrap();
    let mut conn = AsyncPgConnection::establish(&first.url("shop"))
        .await
        .unwrap();
    diesel::sql_query("CREATE TABLE notes (body text)")
        .execute(&mut conn)
        .await
        .unwrap();
    diesel::sql_query("INSERT INTO notes VALUES ('kept')")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    tokio::task::spawn_blocking(move || first.stop())
        .await
        .unwrap();

    let second = {
        let options = options.clone();
        tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&options))
            .await
            .unwrap()
            .unwrap()
    };
    let mut conn = AsyncPgConnection::establish(&second.url("shop"))
        .await
        .unwrap();
    let notes: Vec<Note> = diesel::sql_query("SELECT body FROM notes")
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].body, "kept");
    drop(conn);
    tokio::task::spawn_blocking(move || second.stop())
        .await
        .unwrap();
    drop(std::fs::remove_dir_all(&data_dir));
    drop(std::fs::remove_file(data_dir.with_extension("password")));
}
