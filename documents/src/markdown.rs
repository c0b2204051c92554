//! Markdown: a block per heading, holding the heading line and the text under it, with the
//! path of headings above (`#` headings; lines in code fences are not headings).

use crate::Block;

pub(crate) fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = vec![Block { first_line: Some(1), ..Block::default() }];
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut fence: Option<&str> = None;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
        } else if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(&trimmed[..3]);
        } else if let Some((level, title)) = heading(line) {
            path.retain(|(l, _)| *l < level);
            path.push((level, title));
            blocks.push(Block {
                section: path.iter().map(|(_, t)| t.clone()).collect(),
                first_line: Some(i as u32 + 1),
                ..Block::default()
            });
        }
        blocks.last_mut().expect("one block at least").text.push_str(line);
    }
    blocks
}

/// `## Title ##` -> (2, "Title"); at most three spaces of indent, as CommonMark says.
fn heading(line: &str) -> Option<(usize, String)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    let level = rest.bytes().take_while(|&b| b == b'#').count();
    if indent > 3 || !(1..=6).contains(&level) {
        return None;
    }
    let after = &rest[level..];
    if !(after.is_empty() || after.starts_with([' ', '\t', '\n', '\r'])) {
        return None;
    }
    let title = after.trim().trim_end_matches('#').trim();
    (!title.is_empty()).then(|| (level, title.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_block_knows_its_heading_path_and_first_line() {
        let text = "Intro line.\n# Leave\nGeneral.\n## Sick days\nCall in.\n```\n# not a heading\n```\n## Holidays ##\nBook early.\n# Pay\nMonthly.\n";
        let blocks = blocks(text);
        let summary: Vec<(Vec<&str>, u32)> =
            blocks.iter().map(|b| (b.section.iter().map(String::as_str).collect(), b.first_line.unwrap())).collect();
        assert_eq!(
            summary,
            vec![
                (vec![], 1),
                (vec!["Leave"], 2),
                (vec!["Leave", "Sick days"], 4),
                (vec!["Leave", "Holidays"], 9),
                (vec!["Pay"], 11),
            ]
        );
        assert_eq!(blocks[2].text, "## Sick days\nCall in.\n```\n# not a heading\n```\n");
        assert_eq!(blocks.iter().map(|b| b.text.as_str()).collect::<String>(), text, "no text lost");
        assert_eq!(heading("#hashtag"), None);
    }
}
