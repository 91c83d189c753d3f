/**
 * Splits a file of SQL into statements at top-level semicolons, respecting quoted strings,
 * quoted identifiers, dollar-quoted bodies and comments. Slonik runs one statement per query.
 */
export function splitSqlStatements(text: string): string[] {
  const statements: string[] = [];
  let current = '';
  let index = 0;
  const flush = () => {
    const statement = current.trim();
    if (statement !== '' && !/^(--[^\n]*\n?|\s)*$/.test(statement)) statements.push(statement);
    current = '';
  };
  while (index < text.length) {
    const rest = text.slice(index);
    const char = text[index] as string;
    let token = char;
    if (rest.startsWith('--')) {
      const end = text.indexOf('\n', index);
      token = end === -1 ? rest : text.slice(index, end + 1);
    } else if (rest.startsWith('/*')) {
      const end = text.indexOf('*/', index + 2);
      token = end === -1 ? rest : text.slice(index, end + 2);
    } else if (char === "'" || char === '"') {
      let end = index + 1;
      while (end < text.length) {
        if (text[end] === char && text[end + 1] === char) end += 2;
        else if (text[end] === char) break;
        else end += 1;
      }
      token = text.slice(index, end + 1);
    } else if (char === '$') {
      const tag = /^\$[A-Za-z_]*\$/.exec(rest)?.[0];
      if (tag) {
        const end = text.indexOf(tag, index + tag.length);
        token = end === -1 ? rest : text.slice(index, end + tag.length);
      }
    } else if (char === ';') {
      flush();
      index += 1;
      continue;
    }
    current += token;
    index += token.length;
  }
  flush();
  return statements;
}
