# nbgrader's settings for this course (see README, "Teaching with this").
# The notebooks are Rust (kernel `llm-rust`): a solution region
#     // BEGIN SOLUTION
#     ...
#     // END SOLUTION
# becomes the stub below in the students' copies, which panics until it is replaced.
c = get_config()  # noqa: F821
c.ClearSolutions.code_stub = {"rust": "// YOUR CODE HERE\ntodo!()"}
c.ClearSolutions.begin_solution_delimeter = "BEGIN SOLUTION"
c.ClearSolutions.end_solution_delimeter = "END SOLUTION"
# Rust cells compile before they run; a kernel's first cell (`:dep llm_core`) takes
# seconds with a warm build slot and minutes with a cold one.
c.Execute.timeout = 900
c.Execute.startup_timeout = 300
