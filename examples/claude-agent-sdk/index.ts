/**
 * An in-process agent built on the Claude Agent SDK instead of a CLI process: the handler runs
 * `query()` and reports the tokens and cost it spent, which tinytown sums on the task, the agent
 * and the town. Needs Claude credentials to run (ANTHROPIC_API_KEY or a login); it always
 * type-checks.
 *
 *   cd examples/claude-agent-sdk && npm install && npm start -- "Summarise README.md in three bullet points"
 */
import { query, type SDKResultMessage } from '@anthropic-ai/claude-agent-sdk';
import { Town, type TaskHandler, type TaskUsage } from 'tinytown';

const claude: TaskHandler = async (task, ctx) => {
  const abortController = new AbortController();
  ctx.signal.addEventListener('abort', () => abortController.abort(), { once: true });
  let result: SDKResultMessage | undefined;
  for await (const message of query({
    prompt: task.description,
    options: { cwd: ctx.town.root, permissionMode: 'acceptEdits', abortController, maxBudgetUsd: 1 },
  })) {
    if (message.type === 'result') result = message;
  }
  if (result === undefined) throw new Error('the SDK ended without a result');
  ctx.reportUsage(usageOf(result));
  if (result.subtype !== 'success') {
    // Overloaded or rate-limited runs are worth another attempt; the rest are not.
    const transient = result.errors.some((e) => /overloaded|rate.?limit|529|429/i.test(e));
    throw Object.assign(new Error(`${result.subtype}: ${result.errors.join('; ')}`), { retryable: transient });
  }
  return result.result;
};

/** Sums the per-model usage the SDK reports (main loop and subagents). */
function usageOf(result: SDKResultMessage): TaskUsage {
  const models = Object.values(result.modelUsage);
  const sum = (pick: (m: (typeof models)[number]) => number | undefined): number =>
    models.reduce((total, m) => total + (pick(m) ?? 0), 0);
  return {
    inputTokens: sum((m) => m.inputTokens),
    outputTokens: sum((m) => m.outputTokens),
    cacheReadTokens: sum((m) => m.cacheReadInputTokens),
    cacheWriteTokens: sum((m) => m.cacheCreationInputTokens),
    costUsd: result.total_cost_usd,
    ...(Object.keys(result.modelUsage)[0] !== undefined && { model: Object.keys(result.modelUsage)[0] }),
  };
}

const prompt = process.argv[2] ?? 'List the files in this folder and say what the project does, in two sentences.';
await using town = await Town.connect('.');
const agent = await town.spawnAgent('sdk-agent', { run: claude, timeoutMs: 10 * 60_000 });
const task = await agent.assign(prompt);
const done = await town.waitForTask(task.id, { timeoutMs: 15 * 60_000 });
console.log(done.state === 'completed' ? done.result : `failed: ${done.error}`);
console.log('usage:', done.usage);
