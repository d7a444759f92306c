//! Node sets against ClusterShell 1.9.1's own answers: each row of [`TABLE`] is an expression
//! and what `nodeset -e`, `nodeset -f` and `nodeset -c` printed for it (or `error` when `nodeset`
//! refused it). The answers were taken from ClusterShell (Debian's `clustershell` package), not
//! written by hand. The first test checks cohort's node sets against the table (it runs anywhere);
//! the second, when ClusterShell's `nodeset` is installed, asks it again for every row, so a table
//! that drifted from ClusterShell fails too. It skips with a note when `nodeset` is absent.

use std::path::PathBuf;
use std::process::Command;

use cohort_core::exec::nodeset::NodeSet;

/// `expression | nodeset -e | nodeset -f | nodeset -c`, or `expression | error`. Fields are split
/// on ` | ` and the expression is taken as written, spaces included.
const TABLE: &str = r#"
h[1-10/2] | h1 h3 h5 h7 h9 | h[1,3,5,7,9] | 5
h[01-10/3] | h01 h04 h07 h10 | h[01,04,07,10] | 4
h[0-20/5] | h0 h5 h10 h15 h20 | h[0,5,10,15,20] | 5
h[1-9/4],h[2-10/4] | h1 h2 h5 h6 h9 h10 | h[1-2,5-6,9-10] | 6
node[001-100/25] | node001 node026 node051 node076 | node[001,026,051,076] | 4
a[1-5]!a3,a9 | a1 a2 a4 a5 a9 | a[1-2,4-5,9] | 5
a[1-5]&a[3-8],b1 | a3 a4 a5 b1 | a[3-5],b1 | 4
a[1-5]^a[4-7] | a1 a2 a3 a6 a7 | a[1-3,6-7] | 5
a[1-10]!a[2-9/2] | a1 a3 a5 a7 a9 a10 | a[1,3,5,7,9-10] | 6
a[1-10]&a[1-10/3] | a1 a4 a7 a10 | a[1,4,7,10] | 4
h[1-10/2]^h[1-10/3] | h3 h4 h5 h9 h10 | h[3-5,9-10] | 5
h[1-20]!h[5-15]&h[1-10] | h1 h2 h3 h4 | h[1-4] | 4
n[1-4],n[3-6]!n5^n[1-2]&n[2-9] | n3 n4 n6 | n[3-4,6] | 3
a[1-2]&b |  |  | 0
a1!a1 |  |  | 0
a1^a1 |  |  | 0
x,y,z!y | x z | x,z | 2
web1-eth0,web1-eth1,web2-eth0,web2-eth1,web3-eth0,web3-eth1 | web1-eth0 web1-eth1 web2-eth0 web2-eth1 web3-eth0 web3-eth1 | web[1-3]-eth[0-1] | 6
web[1-3]-eth[0-1] | web1-eth0 web1-eth1 web2-eth0 web2-eth1 web3-eth0 web3-eth1 | web[1-3]-eth[0-1] | 6
web[1-3]-eth0,web1-eth1 | web2-eth0 web3-eth0 web1-eth0 web1-eth1 | web[2-3]-eth0,web1-eth[0-1] | 4
web[1-3]-eth[0-1]!web2-eth1 | web2-eth0 web3-eth0 web1-eth0 web1-eth1 web3-eth1 | web[2-3]-eth0,web1-eth[0-1],web3-eth1 | 5
web[1-3]-eth[0-1]&web[2-5]-eth1 | web2-eth1 web3-eth1 | web[2-3]-eth1 | 2
web[1-3]-eth[0-1]^web[2-4]-eth[1-2] | web2-eth0 web2-eth2 web3-eth0 web3-eth2 web1-eth0 web1-eth1 web4-eth1 web4-eth2 | web[2-3]-eth[0,2],web1-eth[0-1],web4-eth[1-2] | 8
r[1-3]n[1-3]!r2n2 | r1n1 r1n2 r1n3 r3n1 r3n2 r3n3 r2n1 r2n3 | r[1,3]n[1-3],r2n[1,3] | 8
r[1-3]n[1-3]&r[2-4]n[2-4] | r2n2 r2n3 r3n2 r3n3 | r[2-3]n[2-3] | 4
r[1-3]n[1-3]^r[2-4]n[2-4] | r2n1 r2n4 r3n1 r3n4 r1n1 r1n2 r1n3 r4n2 r4n3 r4n4 | r[2-3]n[1,4],r1n[1-3],r4n[2-4] | 10
r1n1,r1n2,r2n1,r2n2 | r1n1 r1n2 r2n1 r2n2 | r[1-2]n[1-2] | 4
c[1-2]r[1-2]n[1-2]!c1r1n1 | c2r1n1 c2r1n2 c2r2n1 c2r2n2 c1r2n1 c1r2n2 c1r1n2 | c2r[1-2]n[1-2],c1r2n[1-2],c1r1n2 | 7
c[1-2]r[1-2]n[1-2] | c1r1n1 c1r1n2 c1r2n1 c1r2n2 c2r1n1 c2r1n2 c2r2n1 c2r2n2 | c[1-2]r[1-2]n[1-2] | 8
rack[1-2]-node[01-04] | rack1-node01 rack1-node02 rack1-node03 rack1-node04 rack2-node01 rack2-node02 rack2-node03 rack2-node04 | rack[1-2]-node[01-04] | 8
rack1-node[01-04],rack2-node[01-03] | rack1-node01 rack1-node02 rack1-node03 rack1-node04 rack2-node01 rack2-node02 rack2-node03 | rack1-node[01-04],rack2-node[01-03] | 7
x[1-2]y[1-2],x[1-2]y[1-2] | x1y1 x1y2 x2y1 x2y2 | x[1-2]y[1-2] | 4
a1b[1-3]^a[1-2]b2 | a1b1 a1b3 a2b2 | a1b[1,3],a2b2 | 3
da[1-2]p[1-2].rack[1-3] | da1p1.rack1 da1p1.rack2 da1p1.rack3 da1p2.rack1 da1p2.rack2 da1p2.rack3 da2p1.rack1 da2p1.rack2 da2p1.rack3 da2p2.rack1 da2p2.rack2 da2p2.rack3 | da[1-2]p[1-2].rack[1-3] | 12
n1.c1,n2.c1,n1.c2,n2.c2,n3.c2 | n1.c1 n1.c2 n2.c1 n2.c2 n3.c2 | n[1-2].c[1-2],n3.c2 | 5
web[01-03]-eth[0-1],web[04-05]-eth[0-1] | web01-eth0 web01-eth1 web02-eth0 web02-eth1 web03-eth0 web03-eth1 web04-eth0 web04-eth1 web05-eth0 web05-eth1 | web[01-05]-eth[0-1] | 10
h1-[1-3],h2-[1-3],h3-[1-2] | h1-1 h1-2 h1-3 h2-1 h2-2 h2-3 h3-1 h3-2 | h[1-2]-[1-3],h3-[1-2] | 8
n01,n2,n03 | n2 n01 n03 | n[2,01,03] | 3
h[01-50] | h01 h02 h03 h04 h05 h06 h07 h08 h09 h10 h11 h12 h13 h14 h15 h16 h17 h18 h19 h20 h21 h22 h23 h24 h25 h26 h27 h28 h29 h30 h31 h32 h33 h34 h35 h36 h37 h38 h39 h40 h41 h42 h43 h44 h45 h46 h47 h48 h49 h50 | h[01-50] | 50
h[1-3,2-5] | h1 h2 h3 h4 h5 | h[1-5] | 5
n[9-11],n[08-10] | n9 n08 n09 n10 n11 | n[9,08-11] | 5
h[1,01] | h1 h01 | h[1,01] | 2
h[1,01,001] | h1 h01 h001 | h[1,01,001] | 3
h[00-10] | h00 h01 h02 h03 h04 h05 h06 h07 h08 h09 h10 | h[00-10] | 11
h[098-102] | h098 h099 h100 h101 h102 | h[098-102] | 5
h[8-12] | h8 h9 h10 h11 h12 | h[8-12] | 5
n0[1-10] | error
h[01-9] | error
h[1-3]0 | h10 h20 h30 | h[10,20,30] | 3
h1[2-3] | h12 h13 | h[12-13] | 2
h[1-3]5 | h15 h25 h35 | h[15,25,35] | 3
node[0-2]00 | node000 node100 node200 | node[000,100,200] | 3
web3,web1,web2,db,web7 | db web1 web2 web3 web7 | db,web[1-3,7] | 5
db,web[1-3,7] | db web1 web2 web3 web7 | db,web[1-3,7] | 5
h09,h10,h7 | h7 h09 h10 | h[7,09-10] | 3
solo9 | solo9 | solo9 | 1
a1 | a1 | a1 | 1
a,b,c | a b c | a,b,c | 3
web | web | web | 1
h[1-3]-ib | h1-ib h2-ib h3-ib | h[1-3]-ib | 3
h[1-3]-ib[0-1]-x | h1-ib0-x h1-ib1-x h2-ib0-x h2-ib1-x h3-ib0-x h3-ib1-x | h[1-3]-ib[0-1]-x | 6
  a , b   | a b | a,b | 2
h[ 1 - 3 ] | h1 h2 h3 | h[1-3] | 3
a[1-3],a[2-5]!a4 | a1 a2 a3 a5 | a[1-3,5] | 4
g[1-5],g[3-8]&g[2-6] | g2 g3 g4 g5 g6 | g[2-6] | 5
n[1-1000]!n[2-999] | n1 n1000 | n[1,1000] | 2
n[1-1000/7]&n[1-1000/3] | n1 n22 n43 n64 n85 n106 n127 n148 n169 n190 n211 n232 n253 n274 n295 n316 n337 n358 n379 n400 n421 n442 n463 n484 n505 n526 n547 n568 n589 n610 n631 n652 n673 n694 n715 n736 n757 n778 n799 n820 n841 n862 n883 n904 n925 n946 n967 n988 | n[1,22,43,64,85,106,127,148,169,190,211,232,253,274,295,316,337,358,379,400,421,442,463,484,505,526,547,568,589,610,631,652,673,694,715,736,757,778,799,820,841,862,883,904,925,946,967,988] | 48
a[1-4]b[1-4]!a2b3 | a1b1 a1b2 a1b3 a1b4 a3b1 a3b2 a3b3 a3b4 a4b1 a4b2 a4b3 a4b4 a2b1 a2b2 a2b4 | a[1,3-4]b[1-4],a2b[1-2,4] | 15
z[10-12],z[8-9] | z8 z9 z10 z11 z12 | z[8-12] | 5
x[000-002] | x000 x001 x002 | x[000-002] | 3
0[1-3] | 01 02 03 | [01-03] | 3
1-[1-3] | 1-1 1-2 1-3 | 1-[1-3] | 3
abc123def456 | abc123def456 | abc123def456 | 1
10.0.0.[1-3] | 10.0.0.1 10.0.0.2 10.0.0.3 | 10.0.0.[1-3] | 3
a_b[1-2],a-b[1-2],a.b[1-2] | a-b1 a-b2 a.b1 a.b2 a_b1 a_b2 | a-b[1-2],a.b[1-2],a_b[1-2] | 6
n[1-2]!n[1-2],m1 | m1 | m1 | 1
h[1-4]!h[1-4] |  |  | 0
h[1-3] | h1 h2 h3 | h[1-3] | 3
h[1 | error
h] | error
h[5-1] | error
h[1-10/0] | error
a[1][2] | error
h[1]] | error
a, | error
h[] | error
h[1,,2] | error
h[a-b] | error
h[1-3/2]5 | error
node[1-2]-gpu[0-3]&node2-gpu[2-5] | node2-gpu2 node2-gpu3 | node2-gpu[2-3] | 2
web[1-2]^web[1-2]-eth0 | web1 web2 web1-eth0 web2-eth0 | web[1-2],web[1-2]-eth0 | 4
"#;

enum Expected<'a> {
    Set { expanded: &'a str, folded: &'a str, count: usize },
    Error,
}

struct Row<'a> {
    expression: &'a str,
    expected: Expected<'a>,
}

fn rows() -> Vec<Row<'static>> {
    TABLE
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(" | ").collect();
            match fields.as_slice() {
                [expression, "error"] => Row { expression, expected: Expected::Error },
                [expression, expanded, folded, count] => Row {
                    expression,
                    expected: Expected::Set {
                        expanded: expanded.trim(),
                        folded: folded.trim(),
                        count: count.trim().parse().expect("a count"),
                    },
                },
                _ => panic!("malformed table row `{line}`"),
            }
        })
        .collect()
}

/// What cohort prints for `expression`: (`-e`, `-f`, `-c`), or None when it refuses it.
fn cohort_answer(expression: &str) -> Option<(String, String, usize)> {
    let set = NodeSet::from_args(&[expression], &|_| None).ok()?;
    Some((set.iter().collect::<Vec<_>>().join(" "), set.fold(), set.len()))
}

#[test]
fn the_table_is_large_enough_and_covers_every_operator() {
    let rows = rows();
    assert!(rows.len() >= 70, "{} rows", rows.len());
    for needle in ["/", "!", "&", "^", "]-", "[0"] {
        assert!(rows.iter().any(|r| r.expression.contains(needle)), "no row uses `{needle}`");
    }
    assert!(rows.iter().any(|r| matches!(r.expected, Expected::Error)));
}

#[test]
fn cohort_agrees_with_clustershell_on_every_row() {
    let mut wrong = Vec::new();
    for row in rows() {
        let ours = cohort_answer(row.expression);
        match (&row.expected, &ours) {
            (Expected::Error, None) => {}
            (Expected::Set { expanded, folded, count }, Some((e, f, c)))
                if e == expanded && f == folded && c == count => {}
            _ => wrong.push(format!("`{}`: cohort gives {ours:?}", row.expression)),
        }
    }
    assert!(wrong.is_empty(), "{} rows differ:\n{}", wrong.len(), wrong.join("\n"));
}

/// ClusterShell's `nodeset` on the PATH, if installed.
fn clustershell_nodeset() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("nodeset")).find(|p| p.is_file())
}

/// `nodeset COMMAND -- expression`: its output without the final newline, or None on a failure.
fn ask(nodeset: &PathBuf, command: &str, expression: &str) -> Option<String> {
    let out = Command::new(nodeset).args([command, "--", expression]).output().expect("nodeset runs");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_owned())
}

#[test]
fn every_row_matches_clustershell_live_when_it_is_installed() {
    let Some(nodeset) = clustershell_nodeset() else {
        println!("note: ClusterShell's `nodeset` is not installed; the live check is skipped");
        return;
    };
    let mut wrong = Vec::new();
    for row in rows() {
        let expanded = ask(&nodeset, "-e", row.expression);
        let theirs = expanded.map(|e| {
            let folded = ask(&nodeset, "-f", row.expression).unwrap_or_default();
            let count =
                ask(&nodeset, "-c", row.expression).and_then(|c| c.parse().ok()).unwrap_or(usize::MAX);
            (e, folded, count)
        });
        let table = match row.expected {
            Expected::Error => None,
            Expected::Set { expanded, folded, count } => {
                Some((expanded.to_owned(), folded.to_owned(), count))
            }
        };
        if theirs != table {
            wrong.push(format!("`{}`: the table says {table:?}, nodeset says {theirs:?}", row.expression));
        }
        let ours = cohort_answer(row.expression);
        if theirs != ours {
            wrong.push(format!("`{}`: cohort gives {ours:?}, nodeset says {theirs:?}", row.expression));
        }
    }
    assert!(wrong.is_empty(), "{} differences:\n{}", wrong.len(), wrong.join("\n"));
}
