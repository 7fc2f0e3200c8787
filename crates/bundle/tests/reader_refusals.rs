//! Hostile and broken archives: every refusal is a typed error, nothing panics.

mod common;

use common::*;
use lockstep_bundle::{BundleError, Limits, ReadOptions, read_dir, read_tar_gz};
use tar::EntryType;

fn read(bytes: &[u8]) -> Result<lockstep_bundle::Bundle, BundleError> {
    read_tar_gz(bytes, &ReadOptions::default())
}

fn read_limited(bytes: &[u8], limits: Limits) -> Result<lockstep_bundle::Bundle, BundleError> {
    read_tar_gz(
        bytes,
        &ReadOptions {
            limits,
            ..ReadOptions::default()
        },
    )
}

#[test]
fn leading_slash_and_dot_names_are_accepted() {
    let b = read(&tar_gz(&[
        file("/a/data.json", b"1"),
        file("./b/data.json", b"2"),
        file("c/x.rego", b"package c"),
    ]))
    .unwrap();
    assert_eq!(b.data, serde_json::json!({"a": 1, "b": 2}));
    assert_eq!(b.modules[0].path, "c/x.rego");
}

#[test]
fn path_traversal_is_refused() {
    for name in [
        "/../x.rego",
        "a/../../x.rego",
        "../data.json",
        "a/../b/data.json",
    ] {
        assert_eq!(
            read(&tar_gz(&[file(name, b"package x")])).unwrap_err(),
            BundleError::PathTraversal(name.to_string()),
            "{name}"
        );
    }
    assert_eq!(
        read(&tar_gz(&[file("/../x.rego", b"")]))
            .unwrap_err()
            .to_string(),
        "bundle read failed: entry '/../x.rego' escapes the bundle root (path traversal)"
    );
}

#[test]
fn links_devices_and_fifos_are_refused() {
    let cases = [
        (EntryType::Symlink, "symlink"),
        (EntryType::Link, "hardlink"),
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "fifo"),
    ];
    for (kind, text) in cases {
        let archive = tar_gz(&[
            file("/a.rego", b"package a"),
            special("/evil", kind, Some("/etc/passwd")),
        ]);
        let err = read(&archive).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "bundle read failed: entry '/evil' is a {text}; only regular files and directories are allowed"
            )
        );
    }
}

#[test]
fn directory_entries_are_fine() {
    let b = read(&tar_gz(&[
        special("/a/", EntryType::Directory, None),
        file("/a/data.json", b"{}"),
    ]))
    .unwrap();
    assert_eq!(b.files.len(), 1);
}

#[test]
fn duplicate_entries_are_refused() {
    let err = read(&tar_gz(&[
        file("/a.rego", b"package a"),
        file("a.rego", b"package a"),
    ]))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "bundle read failed: duplicate entry 'a.rego'"
    );
    let err = read(&tar_gz(&[
        file("/data.json", b"{}"),
        file("/./data.json", b"{}"),
    ]))
    .unwrap_err();
    assert!(matches!(err, BundleError::DuplicateEntry(_)));
}

#[test]
fn too_many_files_is_refused() {
    let entries: Vec<Entry> = (0..11).map(|i| file(&format!("/f{i}.txt"), b"x")).collect();
    let limits = Limits {
        max_files: 10,
        ..Limits::default()
    };
    assert_eq!(
        read_limited(&tar_gz(&entries), limits)
            .unwrap_err()
            .to_string(),
        "bundle read failed: more than 10 entries"
    );
    read_limited(&tar_gz(&entries[..10]), limits).unwrap();
}

#[test]
fn per_file_limit_uses_opa_text() {
    let limits = Limits {
        max_file_bytes: 4,
        ..Limits::default()
    };
    assert_eq!(
        read_limited(&tar_gz(&[file("/data.json", b"[1,2]")]), limits)
            .unwrap_err()
            .to_string(),
        "bundle file 'data.json' size (5 bytes) exceeded max size (4 bytes)"
    );
    read_limited(&tar_gz(&[file("/data.json", b"{}")]), limits).unwrap();
}

#[test]
fn compressed_limit() {
    let archive = tar_gz(&[file("/x.txt", &[7u8; 10_000])]);
    let limits = Limits {
        max_compressed_bytes: 50,
        ..Limits::default()
    };
    assert_eq!(
        read_limited(&archive, limits).unwrap_err().to_string(),
        "bundle read failed: compressed size exceeds limit (50 bytes)"
    );
}

#[test]
fn gzip_bomb_stops_at_the_uncompressed_limit() {
    // 64 MiB of zeros compresses to ~64 KiB; the reader must stop after ~1 MiB.
    let bomb = tar_gz(&[file("/data.json", &vec![b' '; 64 * 1024 * 1024])]);
    assert!(bomb.len() < 200_000);
    let limits = Limits {
        max_uncompressed_bytes: 1024 * 1024,
        ..Limits::default()
    };
    let start = std::time::Instant::now();
    assert_eq!(
        read_limited(&bomb, limits).unwrap_err().to_string(),
        "bundle read failed: uncompressed size exceeds limit (1048576 bytes)"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn lying_header_size_is_not_trusted() {
    // Header claims 1 GiB, the stream ends: an archive error, not a 1 GiB allocation.
    let mut entry = file("/data.json", b"{}");
    entry.header_size = Some(1 << 30);
    let raw = tar_bytes(&[entry]);
    let err = read(&gzip(&raw)).unwrap_err();
    assert!(matches!(err, BundleError::Archive(_)), "{err}");
}

#[test]
fn not_gzip_is_refused_with_opa_text() {
    for input in [
        &b""[..],
        b"x",
        b"hello world",
        &tar_bytes(&[file("/a.rego", b"package a")]),
    ] {
        assert_eq!(
            read(input).unwrap_err().to_string(),
            "bundle read failed: archive read failed: gzip: invalid header"
        );
    }
}

#[test]
fn truncated_archives_are_refused() {
    let archive = tar_gz(&[
        file("/data.json", &vec![b'1'; 20_000]),
        file("/x.rego", b"package x"),
    ]);
    for cut in [
        11,
        20,
        archive.len() / 2,
        archive.len() - 9,
        archive.len() - 1,
    ] {
        let err = read(&archive[..cut]).unwrap_err();
        assert!(matches!(err, BundleError::Archive(_)), "cut {cut}: {err}");
    }
    read(&archive).unwrap_err(); // 20 000 ones is a valid number but the root must be an object
    let ok = tar_gz(&[file("/x.rego", b"package x")]);
    read(&ok).unwrap();
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let valid = tar_gz(&[
        file("/.manifest", br#"{"revision":"r","roots":["a"]}"#),
        file("/a/data.json", br#"{"k":[1,2,{"z":null}]}"#),
        file("/a/p.rego", b"package a\nallow := true\n"),
    ]);
    read(&valid).unwrap();
    // Deterministic xorshift so failures reproduce.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..400 {
        let mut bytes = valid.clone();
        let flips = 1 + next() % 8;
        for _ in 0..flips {
            let i = (next() as usize) % bytes.len();
            bytes[i] = next() as u8;
        }
        let cut = (next() as usize) % (bytes.len() + 1);
        let _ = read(&bytes);
        let _ = read(&bytes[..cut]);
    }
    for len in 0..300 {
        let noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = read(&noise);
        let mut gz_noise = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        gz_noise.extend_from_slice(&noise);
        let _ = read(&gz_noise);
        // Random but valid gzip around random tar-ish bytes.
        let _ = read(&gzip(&noise));
    }
}

#[test]
fn content_refusals() {
    let cases: Vec<(Vec<Entry>, &str)> = vec![
        (
            vec![file("/.manifest", br#"{"roots": ["a", "a/b"]}"#)],
            "manifest has overlapped roots: 'a' and 'a/b'",
        ),
        (
            vec![
                file("/.manifest", br#"{"roots": ["a"]}"#),
                file("/x.rego", b"package b.c"),
            ],
            "manifest roots [a] do not permit 'package b.c' in module '/x.rego'",
        ),
        (
            vec![
                file("/.manifest", br#"{"roots": ["a"]}"#),
                file("/b/data.json", b"1"),
            ],
            "manifest roots [a] do not permit data at path '/b' (hint: check bundle directory structure)",
        ),
        (
            vec![file("/data.json", b"[1]")],
            "bundle load failed on /data.json: root value must be object",
        ),
        (
            vec![
                file("/data.json", br#"{"a": {"b": 1}}"#),
                file("/a/data.json", br#"{"b": 2}"#),
            ],
            "bundle load failed on /a/data.json: failed to insert data file from path a",
        ),
        (
            vec![file("/x.rego", b"")],
            "/x.rego: rego_parse_error: empty module",
        ),
        (
            vec![file("/patch.json", b"[]")],
            "bundle load failed on patch decode: json: cannot unmarshal array into Go value of type bundle.Patch",
        ),
        (
            vec![
                file(
                    "/patch.json",
                    br#"{"data":[{"op":"upsert","path":"/a","value":1}]}"#,
                ),
                file("/x.rego", b"package x"),
            ],
            "delta bundle expected to contain only patch file but policy files found",
        ),
        (
            vec![
                file("/.manifest", br#"{"rego_version": 2}"#),
                file("/x.rego", b"package x"),
            ],
            "unknown bundle rego-version 2 for file '/x.rego'",
        ),
        (
            vec![file(
                "/.manifest",
                br#"{"wasm": [{"entrypoint": "a/b", "module": "/policy.wasm"}]}"#,
            )],
            "manifest references wasm module '/policy.wasm' but the module file does not exist",
        ),
    ];
    for (entries, want) in cases {
        let err = read(&tar_gz(&entries)).unwrap_err();
        assert_eq!(err.to_string(), want);
    }
    let err = read(&tar_gz(&[file("/data.json", b"{oops")])).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("bundle load failed on /data.json: "),
        "{err}"
    );
    let err = read(&tar_gz(&[file("/.manifest", b"{\"roots\": 1}")])).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("bundle load failed on manifest decode: "),
        "{err}"
    );
}

#[test]
fn rego_versions_resolve_per_file() {
    let b = read(&tar_gz(&[
        file(
            "/.manifest",
            br#"{"rego_version": 0, "file_rego_versions": {"/v1/*.rego": 1}}"#,
        ),
        file("/v1/a.rego", b"package v1"),
        file("/old/b.rego", b"package old"),
    ]))
    .unwrap();
    let versions: Vec<(String, i64)> = b
        .modules
        .iter()
        .map(|m| (m.path.clone(), m.rego_version))
        .collect();
    assert_eq!(
        versions,
        vec![("old/b.rego".into(), 0), ("v1/a.rego".into(), 1)]
    );
}

#[test]
fn yaml_and_other_files() {
    let b = read(&tar_gz(&[
        file("/a/data.yaml", b"x: 1\ny: [true]\n"),
        file("/b/data.yml", b"z: s"),
        file("/c/other.json", b"not even json"),
    ]))
    .unwrap();
    assert_eq!(
        b.data,
        serde_json::json!({"a": {"x": 1, "y": [true]}, "b": {"z": "s"}})
    );
    assert_eq!(b.files.len(), 3);
}

#[test]
fn directory_refusals_and_skips() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join(".git/config"), "x").unwrap();
    std::fs::write(dir.path().join(".hidden.rego"), "not rego").unwrap();
    std::fs::write(dir.path().join("data.json"), "{\"a\": 1}").unwrap();
    std::fs::write(dir.path().join("skip.txt"), "x").unwrap();
    let opts = ReadOptions {
        ignore: vec!["skip.*".into()],
        ..ReadOptions::default()
    };
    let b = read_dir(dir.path(), &opts).unwrap();
    assert_eq!(
        b.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        vec!["data.json"]
    );

    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link.rego")).unwrap();
        assert_eq!(
            read_dir(dir.path(), &opts).unwrap_err().to_string(),
            "bundle read failed: entry 'link.rego' is a symlink; only regular files and directories are allowed"
        );
        std::fs::remove_file(dir.path().join("link.rego")).unwrap();
    }
    let limits = Limits {
        max_file_bytes: 3,
        ..Limits::default()
    };
    assert_eq!(
        read_dir(dir.path(), &ReadOptions { limits, ..opts })
            .unwrap_err()
            .to_string(),
        "bundle file 'data.json' size (8 bytes) exceeded max size (3 bytes)"
    );
}

#[test]
fn lazy_data_keeps_bytes_and_still_refuses_bad_json() {
    let opts = ReadOptions {
        lazy_data: true,
        ..ReadOptions::default()
    };
    let b = read_tar_gz(
        tar_gz(&[
            file("/a/data.json", b"[1, 2]"),
            file("/data.json", b"{\"x\": 1}"),
        ])
        .as_slice(),
        &opts,
    )
    .unwrap();
    assert_eq!(b.data, serde_json::json!({}));
    assert_eq!(b.file("a/data.json").unwrap().bytes, b"[1, 2]");
    let err = read_tar_gz(tar_gz(&[file("/a/data.json", b"{oops")]).as_slice(), &opts).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("bundle load failed on /a/data.json: "),
        "{err}"
    );
    let err = read_tar_gz(tar_gz(&[file("/data.json", b"[1]")]).as_slice(), &opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bundle load failed on /data.json: root value must be object"
    );
}
