#!/usr/bin/env node
/**
 * An offline stand-in for an agent CLI, so the README example runs without credentials:
 * it reads the prompt on stdin, "works" for 300–900 ms and prints a short, plausible result.
 *
 * Use it as a custom CLI: `{ command: 'node', args: ['examples/demo-agent.mjs'], prompt: 'stdin' }`.
 */
const prompt = await readStdin();
const task = firstLine(prompt);
await sleep(300 + Math.floor(Math.random() * 600));
process.stdout.write(`${respond(prompt.toLowerCase(), task)}\n`);

function respond(text, task) {
  if (text.includes('review')) return review(task);
  if (/\b(implement|build|fix)\b/.test(text)) return implementation(text, task);
  if (text.includes('design')) return design(task);
  return `Done: ${task || 'nothing to do'}.`;
}

function design(task) {
  return [
    `Design for "${task}":`,
    '- Resources: POST /auth/register, POST /auth/login, POST /auth/refresh, POST /auth/logout',
    '- Tokens: 15-minute JWT access token, rotating 7-day refresh token stored hashed; schema in docs/design.md',
  ].join('\n');
}

function implementation(text, task) {
  const files = text.includes('frontend')
    ? ['src/ui/LoginForm.tsx (+142)', 'src/ui/useSession.ts (+58)', 'src/ui/LoginForm.test.tsx (+77)']
    : ['src/server/routes/auth.ts (+118)', 'src/server/services/tokens.ts (+64 -3)', 'test/auth.test.ts (+91)'];
  return [`Implemented "${task}". Files changed:`, ...files.map((f) => `  ${f}`), 'All tests pass.'].join('\n');
}

function review(task) {
  return [
    `Review of "${task}": APPROVED with 2 minor comments.`,
    '- Rate-limit the login endpoint; - add a test for an expired refresh token.',
  ].join('\n');
}

function firstLine(text) {
  const line = text.split(/\r?\n/).find((l) => l.trim().length > 0) ?? '';
  const trimmed = line.trim();
  return trimmed.length > 80 ? `${trimmed.slice(0, 79)}…` : trimmed;
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
