#include "test.h"
#include "jmirror/jmirror.h"

static void test_placeholder(void) { ASSERT(1); }

static const test_case cases[] = {TEST_CASE(test_placeholder), {0}};

int main(int argc, char **argv) { return test_main(argc, argv, cases); }
