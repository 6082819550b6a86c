//! A real OpenLDAP `slapd` of the test's own: its config and database in a temp dir,
//! loaded with `slapadd` before it starts, listening on a free loopback port. Killed on
//! drop. Users (password `ALICE_PASSWORD` etc.) live under `ou=people,dc=example,dc=org`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const SUFFIX: &str = "dc=example,dc=org";
pub const USER_DN_TEMPLATE: &str = "uid={username},ou=people,dc=example,dc=org";
pub const ALICE_PASSWORD: &str = "correct horse battery staple";
/// The password of `uid=carol\,admin` (a uid with a comma in it).
pub const CAROL_PASSWORD: &str = "carol's own password";

pub struct Slapd {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Slapd {
    pub async fn start() -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("db")).unwrap();
        std::fs::write(root.join("slapd.conf"), config(root)).unwrap();
        std::fs::write(root.join("data.ldif"), data()).unwrap();
        let status = Command::new(sbin("slapadd"))
            .arg("-f")
            .arg(root.join("slapd.conf"))
            .arg("-l")
            .arg(root.join("data.ldif"))
            .stdout(Stdio::null())
            .status()
            .expect("slapadd is installed (scripts/deps installs slapd)");
        assert!(status.success(), "slapadd failed");

        let port = super::free_port();
        let url = format!("ldap://127.0.0.1:{port}");
        // `-d 0` keeps slapd in the foreground (a child we can kill) without debug output.
        let child = Command::new(sbin("slapd"))
            .arg("-f")
            .arg(root.join("slapd.conf"))
            .args(["-h", &format!("{url}/"), "-d", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slapd is installed (scripts/deps installs it)");
        let mut slapd = Slapd {
            url,
            child,
            _dir: dir,
        };
        slapd.wait_ready(port).await;
        slapd
    }

    /// Polls until slapd answers an anonymous bind, with a deadline.
    async fn wait_ready(&mut self, port: u16) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("slapd exited early: {status}");
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
                && let Ok((conn, mut ldap)) = ldap3::LdapConnAsync::new(&self.url).await
            {
                ldap3::drive!(conn);
                if ldap.simple_bind("", "").await.is_ok_and(|r| r.rc == 0) {
                    let _ = ldap.unbind().await;
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "slapd on {port} did not come up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn sbin(name: &str) -> String {
    let path = format!("/usr/sbin/{name}");
    if Path::new(&path).exists() {
        path
    } else {
        name.to_owned()
    }
}

fn config(root: &Path) -> String {
    let root = root.display();
    format!(
        r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {root}/slapd.pid
argsfile {root}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 10485760
suffix "{SUFFIX}"
rootdn "cn=admin,{SUFFIX}"
directory {root}/db
access to attrs=userPassword by self write by anonymous auth by * none
access to * by self read by users read by * none
"#
    )
}

fn hash(password: &str) -> String {
    let out = Command::new(sbin("slappasswd"))
        .args(["-s", password])
        .output()
        .expect("slappasswd is installed");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn data() -> String {
    format!(
        r#"dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: alice
cn: Alice Liddell
sn: Liddell
mail: alice@example.org
userPassword: {alice}

dn: uid=carol\,admin,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: carol,admin
cn: Carol Comma
sn: Comma
userPassword: {carol}
"#,
        alice = hash(ALICE_PASSWORD),
        carol = hash(CAROL_PASSWORD),
    )
}
