//! Draws [`Top`] into a ratatui frame: a title, the pool line, the cells'
//! table (the selected row reversed), and a footer with the keys or the
//! question `d` asked. Drawn whole on every refresh and every resize.

use super::model::{Top, HEADER};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Row, Table, TableState};
use ratatui::Frame;

/// The columns' widths, in [`HEADER`] order: the sid takes what is left.
const WIDTHS: [Constraint; 11] = [
    Constraint::Min(12),
    Constraint::Length(10),
    Constraint::Length(13),
    Constraint::Length(8),
    Constraint::Length(5),
    Constraint::Length(10),
    Constraint::Length(6),
    Constraint::Length(5),
    Constraint::Length(10),
    Constraint::Length(7),
    Constraint::Length(7),
];

pub fn draw(frame: &mut Frame, top: &Top, title: &str) {
    let [head, pool, cluster, table, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(u16::from(top.cluster.is_some())),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(
        Paragraph::new(
            Line::from(title.to_owned()).style(Style::new().add_modifier(Modifier::BOLD)),
        ),
        head,
    );
    frame.render_widget(Paragraph::new(top.pool.text()), pool);
    if let Some(c) = &top.cluster {
        frame.render_widget(Paragraph::new(c.as_str()), cluster);
    }
    let rows = top.rows.iter().map(|r| Row::new(r.cells()));
    let header =
        Row::new(HEADER).style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let widget = Table::new(rows, WIDTHS)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::new().with_selected(top.selected_index());
    frame.render_stateful_widget(widget, table, &mut state);
    let footer = match (&top.confirm, &top.message) {
        (Some(sid), _) => format!(
            "tear down the cell of {}? y: yes, any other key: no",
            crate::logsafe::escape(sid)
        ),
        (None, Some(m)) => format!(
            "{m} · q quit · s sort ({}) · ↑↓ select · d tear down",
            top.sort.name()
        ),
        (None, None) => format!(
            "q quit · s sort ({}) · ↑↓ select · d tear down",
            top.sort.name()
        ),
    };
    frame.render_widget(Paragraph::new(footer), foot);
}

#[cfg(test)]
mod tests {
    use super::super::model::tests::known;
    use super::super::model::{Key, Top};
    use super::draw;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn screen(top: &Top, w: u16, h: u16) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, top, "hum top")).unwrap();
        let buf = t.backend().buffer().clone();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol().to_owned())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn the_table_shows_each_cell_of_a_known_status() {
        let mut top = Top::default();
        top.update(&known(1_000), 0);
        top.update(&known(1_500), 1_000);
        let lines = screen(&top, 120, 8);
        assert_eq!(lines[0], "hum top");
        assert!(lines[1].starts_with("cells 2/8 · queued 1"), "{lines:#?}");
        assert!(lines[2].starts_with("SID"), "{lines:#?}");
        let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            words(&lines[3]),
            [
                "beta", "sim", "busy", "400", "2", "300.0", "MiB", "50.0", "3", "$1.2500", "-",
                "1m05s"
            ]
        );
        assert_eq!(
            words(&lines[4]),
            [
                "alpha", "sim", "idle", "200", "2", "100.0", "MiB", "0.0", "3", "$0.2500", "4s",
                "1m05s"
            ]
        );
        assert!(lines[7].starts_with("q quit · s sort (rss)"), "{lines:#?}");
    }

    #[test]
    fn a_cluster_node_shows_every_node_under_the_pool_line() {
        let mut status = known(0);
        status.daemon.cluster = Some(crate::reports::ClusterStatus {
            name: "hum".into(),
            node: "a".into(),
            connected: true,
            nodes: vec![
                crate::reports::NodeView {
                    node: "a".into(),
                    cells: 2,
                    cap: 8,
                    linked: true,
                    ..Default::default()
                },
                crate::reports::NodeView {
                    node: "b".into(),
                    cells: 4,
                    cap: 4,
                    linked: true,
                    draining: true,
                    ..Default::default()
                },
            ],
            sids_elsewhere_count: 3,
            ..Default::default()
        });
        let mut top = Top::default();
        top.update(&status, 0);
        let lines = screen(&top, 120, 9);
        assert_eq!(
            lines[2].trim_end(),
            "cluster hum · a (here) 2/8 · b 4/4 draining · 3 sids elsewhere",
            "{lines:#?}"
        );
        assert!(lines[3].starts_with("SID"), "{lines:#?}");
        assert!(top.plain_line().contains("| cluster hum · a (here) 2/8"));
        // One machine: no such line, the table right under the pool.
        top.update(&known(0), 0);
        assert!(screen(&top, 120, 9)[2].starts_with("SID"));
    }

    #[test]
    fn a_small_terminal_still_draws_and_d_shows_its_question() {
        let mut top = Top::default();
        top.update(&known(0), 0);
        top.key(Key::Char('d'));
        let lines = screen(&top, 40, 5);
        assert_eq!(lines.len(), 5);
        assert!(
            lines[4].starts_with("tear down the cell of beta?"),
            "{lines:#?}"
        );
        // Resized larger: the same rows, nothing left of the small frame.
        let lines = screen(&top, 130, 10);
        assert!(lines[3].starts_with("beta"), "{lines:#?}");
    }
}
