// Markdown to DOM for pagemill's results: headings, paragraphs, lists, pipe tables, HTML
// tables (GLM-OCR writes them), $$ formulas, code fences and figure links. The text is OCR
// output of documents nobody vouches for, so it only ever becomes text nodes: no string is
// parsed into the live page, and an HTML table is read in an inert document and rebuilt
// cell by cell from its text.

const HEADING = /^(#{1,6})\s+(.*)$/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*\d{1,9}[.)]\s+(.*)$/;
const IMAGE = /^!\[([^\]]*)\]\(([^)\s]+)\)$/;
const COMMENT = /^<!--.*-->$/;
const TABLE_RULE = /^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$/;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// **bold**, *em* / _em_ and `code` inside a line; everything else is text.
const INLINE = /(\*\*[^*]+\*\*|`[^`]+`|\*[^*\s][^*]*\*|_[^_\s][^_]*_)/;

export function inline(parent, text) {
  for (const part of text.split(INLINE)) {
    if (!part) continue;
    if (part.startsWith("**") && part.endsWith("**") && part.length > 4) {
      parent.append(el("strong", "", part.slice(2, -2)));
    } else if (part.startsWith("`") && part.endsWith("`") && part.length > 2) {
      parent.append(el("code", "", part.slice(1, -1)));
    } else if (/^([*_]).+\1$/.test(part)) {
      parent.append(el("em", "", part.slice(1, -1)));
    } else {
      parent.append(document.createTextNode(part));
    }
  }
  return parent;
}

function cells(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|")) row = row.slice(0, -1);
  return row.split("|").map((cell) => cell.trim());
}

function pipeTable(lines) {
  const table = el("table");
  const head = table.createTHead().insertRow();
  for (const cell of cells(lines[0])) inline(head.appendChild(el("th")), cell);
  const body = table.createTBody();
  for (const line of lines.slice(2)) {
    const row = body.insertRow();
    for (const cell of cells(line)) inline(row.insertCell(), cell);
  }
  return table;
}

// An HTML table, read by DOMParser (an inert document: no script runs, nothing loads) and
// rebuilt from rows, cells, spans and text only.
function htmlTable(source) {
  const parsed = new DOMParser().parseFromString(source, "text/html");
  const tables = parsed.querySelectorAll("table");
  if (!tables.length) return el("pre", "", source);
  const out = el("div");
  for (const found of tables) {
    const table = el("table");
    for (const sourceRow of found.querySelectorAll("tr")) {
      const row = table.insertRow();
      for (const sourceCell of sourceRow.children) {
        const tag = sourceCell.tagName === "TH" ? "th" : "td";
        const cell = row.appendChild(el(tag, "", sourceCell.textContent.trim()));
        for (const span of ["colspan", "rowspan"]) {
          const value = Number.parseInt(sourceCell.getAttribute(span) || "", 10);
          if (value > 1 && value <= 1000) cell.setAttribute(span, String(value));
        }
      }
    }
    out.append(table);
  }
  return out;
}

// Renders `markdown` into a fragment. `image(alt, href)` returns the node of a figure link
// (the caller fetches it with the API key).
export function render(markdown, image) {
  const out = document.createDocumentFragment();
  const lines = markdown.replace(/\r\n?/g, "\n").split("\n");
  let paragraph = [];
  let list = null;

  const flush = () => {
    if (paragraph.length) out.append(inline(el("p"), paragraph.join(" ")));
    paragraph = [];
    list = null;
  };

  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const trimmed = line.trim();
    if (!trimmed) {
      flush();
      continue;
    }
    if (trimmed.startsWith("```") || trimmed === "$$") {
      flush();
      const fence = trimmed.startsWith("```") ? "```" : "$$";
      const body = [];
      for (i++; i < lines.length && lines[i].trim() !== fence; i++) body.push(lines[i]);
      out.append(el("pre", fence === "$$" ? "formula" : "code", body.join("\n")));
      continue;
    }
    if (trimmed === "<!-- table -->") {
      // A line recognizer's table: its cells as lines, kept as lines.
      flush();
      const body = [];
      for (i++; i < lines.length && lines[i].trim(); i++) body.push(lines[i].trim());
      out.append(el("pre", "table-lines", body.join("\n")));
      continue;
    }
    if (COMMENT.test(trimmed)) {
      flush();
      continue;
    }
    if (/^<table[\s>]/i.test(trimmed)) {
      flush();
      const body = [line];
      while (!/<\/table>/i.test(body[body.length - 1]) && i + 1 < lines.length) body.push(lines[++i]);
      out.append(htmlTable(body.join("\n")));
      continue;
    }
    const heading = HEADING.exec(trimmed);
    if (heading) {
      flush();
      out.append(inline(el(`h${Math.min(6, heading[1].length + 2)}`, "md-heading"), heading[2]));
      continue;
    }
    const figure = IMAGE.exec(trimmed);
    if (figure) {
      flush();
      out.append(image(figure[1], figure[2]));
      continue;
    }
    if (trimmed.startsWith("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1].trim())) {
      flush();
      const body = [trimmed];
      for (i++; i < lines.length && lines[i].trim().startsWith("|"); i++) body.push(lines[i].trim());
      i--;
      out.append(pipeTable(body));
      continue;
    }
    const bullet = BULLET.exec(line);
    const numbered = bullet ? null : NUMBERED.exec(line);
    if (bullet || numbered) {
      const tag = bullet ? "UL" : "OL";
      if (paragraph.length) flush();
      if (!list || list.tagName !== tag) {
        list = el(tag.toLowerCase());
        out.append(list);
      }
      inline(list.appendChild(el("li")), (bullet || numbered)[1]);
      continue;
    }
    if (list) list = null;
    paragraph.push(trimmed);
  }
  flush();
  return out;
}
