// `hsctl nest --depth 3` end to end with --isolation netns: every level in its
// own network namespace joined to its parent by a veth /30. Needs root (CI is root).
import { nestScenario } from "./nest-scenario.js";

await nestScenario("netns");
