// A small Rhai mode for CodeMirror 6: keywords, literals, strings (with interpolated
// back-tick strings), numbers, comments and operators.
import { StreamLanguage, type StreamParser } from '@codemirror/language';

const keywords = new Set([
  'let', 'const', 'if', 'else', 'switch', 'do', 'while', 'loop', 'until', 'for', 'in',
  'continue', 'break', 'return', 'throw', 'try', 'catch', 'fn', 'private', 'import',
  'export', 'as', 'global', 'is_shared', 'Fn', 'call', 'curry', 'this', 'type_of', 'print',
  'debug', 'eval'
]);
const atoms = new Set(['true', 'false', '()']);

interface State {
  inBlockComment: boolean;
  inBacktick: boolean;
}

const parser: StreamParser<State> = {
  name: 'rhai',
  startState: () => ({ inBlockComment: false, inBacktick: false }),
  token(stream, state) {
    if (state.inBlockComment) {
      if (stream.skipTo('*/')) {
        stream.next();
        stream.next();
        state.inBlockComment = false;
      } else stream.skipToEnd();
      return 'comment';
    }
    if (state.inBacktick) {
      while (!stream.eol()) {
        const ch = stream.next();
        if (ch === '\\') stream.next();
        else if (ch === '`') {
          state.inBacktick = false;
          break;
        }
      }
      return 'string';
    }
    if (stream.eatSpace()) return null;
    if (stream.match('//')) {
      stream.skipToEnd();
      return 'comment';
    }
    if (stream.match('/*')) {
      state.inBlockComment = true;
      return 'comment';
    }
    const ch = stream.peek();
    if (ch === '"') {
      stream.next();
      while (!stream.eol()) {
        const c = stream.next();
        if (c === '\\') stream.next();
        else if (c === '"') break;
      }
      return 'string';
    }
    if (ch === "'") {
      stream.match(/^'(\\.|[^'\\])'/);
      if (stream.current() === '') stream.next();
      return 'string';
    }
    if (ch === '`') {
      stream.next();
      state.inBacktick = true;
      return 'string';
    }
    if (stream.match(/^(0x[0-9a-fA-F_]+|0b[01_]+|0o[0-7_]+|\d[\d_]*(\.\d[\d_]*)?([eE][+-]?\d+)?)/)) {
      return 'number';
    }
    if (stream.match(/^[A-Za-z_][A-Za-z0-9_]*/)) {
      const word = stream.current();
      if (keywords.has(word)) return 'keyword';
      if (atoms.has(word)) return 'atom';
      if (stream.peek() === '(') return 'function';
      return 'variableName';
    }
    if (stream.match(/^[+\-*/%=<>!&|^~?.:]+/)) return 'operator';
    stream.next();
    return null;
  },
  languageData: { commentTokens: { line: '//', block: { open: '/*', close: '*/' } } }
};

export const rhai = StreamLanguage.define(parser);
