//! Someone holding the storage learns nothing: no file name, no content,
//! no host or user name appears in any repository file.

use std::fs;

use crate::util::Env;

#[test]
fn repository_files_hold_no_plaintext() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(source.join("Secret-Folder-Name")).unwrap();
    let marker = "THE-QUICK-BROWN-MARKER-CONTENT";
    // Compressible content would be hidden by compression alone, so use
    // both a plain repeated marker and incompressible-looking text.
    fs::write(
        source.join("Secret-Folder-Name/confidential-report.txt"),
        marker.repeat(3),
    )
    .unwrap();
    fs::write(
        source.join("tax-return-2026.pdf"),
        format!("header {marker} trailer"),
    )
    .unwrap();
    env.snapshot(&source);

    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let mut needles: Vec<&[u8]> = vec![
        b"Secret-Folder-Name",
        b"confidential-report",
        b"tax-return-2026",
        marker.as_bytes(),
        b"mapache-e2e-", // the temp folder in every source path
    ];
    // A very short host name would turn up in random bytes by chance.
    if host.len() >= 6 {
        needles.push(host.as_bytes());
    }
    let files = env.repo_files();
    assert!(files.len() > 3);
    for file in files {
        let data = fs::read(&file).unwrap();
        for needle in &needles {
            assert!(
                !data.windows(needle.len()).any(|w| w == *needle),
                "{} contains {:?}",
                file.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}
